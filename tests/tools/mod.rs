mod log_provision;
mod log_provision_stream;
mod wait_for_deps;
mod wait_for_stack_ready;
