mod log_provision;
mod log_provision_stream;
