fn main() -> std::process::ExitCode {
    mount_host_fs::main(std::env::args_os())
}
