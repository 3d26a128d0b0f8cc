fn main() -> std::process::ExitCode {
    wait_for_stack_ready::main(std::env::args_os())
}
