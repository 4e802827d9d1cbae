//! Integration tests that run the real `rtcbox` binary.

mod binary;
mod fuzz;
mod loadtest;
mod turn_fuzzing;
