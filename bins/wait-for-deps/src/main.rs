fn main() -> std::process::ExitCode {
    wait_for_deps::main(std::env::args_os())
}
