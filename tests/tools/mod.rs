mod emulator_tools;
mod log_provision;
mod log_provision_stream;
mod user_data;
