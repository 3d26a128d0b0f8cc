fn main() -> std::process::ExitCode {
    log_provision_stream::main(std::env::args_os())
}
