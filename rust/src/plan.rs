//! Run planning: the run id of every (params, replicate) task of an experiment.
//!
//! Task `t` of `P * R` tasks uses `params_fps[t / R]` and `seed_fps[t % R]`.

use rayon::prelude::*;

use crate::encoding::encode_str;
use crate::fingerprint::{hex_digest, run_id_prefix, Hex};
use crate::CoreError;

/// Run ids of all `params_fps.len() * seed_fps.len()` tasks, replicate varying fastest.
pub fn plan_run_ids(
    experiment_id: &str,
    context_fp: &str,
    params_fps: &[String],
    seed_fps: &[String],
) -> Result<Vec<Hex>, CoreError> {
    let too_long = |e| CoreError::Encoding(format!("cannot encode run id input: {:?}", e));
    let prefix = run_id_prefix(experiment_id, context_fp).map_err(too_long)?;
    let p_enc = params_fps
        .iter()
        .map(|s| encode_str(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(too_long)?;
    let s_enc = seed_fps
        .iter()
        .map(|s| encode_str(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(too_long)?;
    let r = s_enc.len();
    let total = p_enc.len().checked_mul(r).ok_or_else(|| {
        CoreError::ParamSpec(format!(
            "{} params x {} replicates overflows the task count",
            p_enc.len(),
            r
        ))
    })?;
    Ok((0..total)
        .into_par_iter()
        .map(|t| {
            let mut h = prefix.clone();
            h.update(&p_enc[t / r]).update(&s_enc[t % r]);
            hex_digest(&h.finish())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::{hex_str, run_id};

    #[test]
    fn matches_run_id_loop() {
        let ps: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
        let ss: Vec<String> = (0..3).map(|i| format!("s{i}")).collect();
        let got = plan_run_ids("exp", "ctx", &ps, &ss).unwrap();
        let mut want = Vec::new();
        for p in &ps {
            for s in &ss {
                want.push(run_id("exp", "ctx", p, s).unwrap());
            }
        }
        let got: Vec<&str> = got.iter().map(hex_str).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn empty_inputs() {
        assert!(plan_run_ids("e", "c", &[], &["s".into()])
            .unwrap()
            .is_empty());
        assert!(plan_run_ids("e", "c", &["p".into()], &[])
            .unwrap()
            .is_empty());
    }
}
