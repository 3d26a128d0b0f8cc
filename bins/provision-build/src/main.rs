fn main() -> std::process::ExitCode {
    provision_build::main(std::env::args_os())
}
