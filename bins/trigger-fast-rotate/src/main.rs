fn main() -> std::process::ExitCode {
    trigger_fast_rotate::main(std::env::args_os())
}
