//! Small helpers for benchmarks: percentiles of sorted samples, the pod-start
//! benchmarks' size arguments.

use std::time::Duration;

/// The `p`-th percentile (0.0..=1.0) of `sorted` samples, nearest rank; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p.clamp(0.0, 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Parses `--pods N` (1..=`max_pods`, default 100) and `--nodes N` (1..=5, default 3)
/// from `args` (the program name left out); any other argument is an error.
pub fn pods_and_nodes(
    args: impl IntoIterator<Item = String>,
    max_pods: usize,
) -> Result<(usize, usize), String> {
    let (mut pods, mut nodes) = (100usize, 3usize);
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let mut num = |lo: usize, hi: usize| {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|n| (lo..=hi).contains(n))
                .ok_or(format!("{a} takes a number from {lo} to {hi}"))
        };
        match a.as_str() {
            "--pods" => pods = num(1, max_pods)?,
            "--nodes" => nodes = num(1, 5)?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok((pods, nodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_and_nodes_defaults_bounds_and_errors() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(pods_and_nodes(args(&[]), 200), Ok((100, 3)));
        assert_eq!(
            pods_and_nodes(args(&["--nodes", "2", "--pods", "7"]), 200),
            Ok((7, 2))
        );
        assert_eq!(
            pods_and_nodes(args(&["--pods", "201"]), 200),
            Err("--pods takes a number from 1 to 200".into())
        );
        assert_eq!(
            pods_and_nodes(args(&["--nodes"]), 200),
            Err("--nodes takes a number from 1 to 5".into())
        );
        assert_eq!(
            pods_and_nodes(args(&["-x"]), 200),
            Err("unknown argument \"-x\"".into())
        );
    }

    #[test]
    fn nearest_rank_and_edges() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&v, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
