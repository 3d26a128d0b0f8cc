mod log_provision;
mod log_provision_stream;
mod render_stack_env;
