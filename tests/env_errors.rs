//! An unknown `WGPU_BACKEND` or `WGPU_POWER_PREF` value is an error that
//! names the accepted values, never a silent fall-back to no backend. (Its
//! own test binary: it sets process-wide environment variables.)

use wgpu_batchnorm::{ContextOptions, Error, GpuContext};

#[test]
fn unknown_environment_values_are_errors_naming_the_accepted_ones() {
    // SAFETY (of intent): this binary has this one test, so no other
    // thread reads the environment meanwhile.
    std::env::set_var("WGPU_BACKEND", "bogus");
    let err = GpuContext::new().expect_err("bogus backend");
    assert!(
        matches!(
            &err,
            Error::InvalidEnv {
                variable: "WGPU_BACKEND",
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("WGPU_BACKEND=\"bogus\" is not recognised"),
        "{text}"
    );
    assert!(text.contains("vulkan, metal, dx12, gl"), "{text}");
    std::env::remove_var("WGPU_BACKEND");

    std::env::set_var("WGPU_POWER_PREF", "fastest");
    let err = ContextOptions::from_env().expect_err("bogus power preference");
    assert!(err.to_string().contains("low, high, none"), "{err}");
    std::env::remove_var("WGPU_POWER_PREF");
    assert!(ContextOptions::from_env().is_ok());
}
