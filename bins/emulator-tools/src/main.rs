fn main() -> std::process::ExitCode {
    emulator_tools::main(std::env::args_os())
}
