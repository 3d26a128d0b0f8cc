fn main() -> std::process::ExitCode {
    install_emulator_containers::main(std::env::args_os())
}
