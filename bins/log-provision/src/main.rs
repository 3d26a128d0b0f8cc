fn main() -> std::process::ExitCode {
    log_provision::main(std::env::args_os())
}
