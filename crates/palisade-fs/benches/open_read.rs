//! The cost of confinement: open and read a small (4 KiB) file nested two
//! directories deep through a `SafeRoot` (kernel `openat2` and the user-space
//! walk) against `std::fs` with a plain path, in the same run. Parsing the
//! request path through the rules is measured separately.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)] // bench harness: a failed setup should abort loudly

use std::hint::black_box;
use std::io::Read;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use palisade_fs::{PathRules, Resolver, SafeRoot};

const NAME: &str = "docs/2024/report.txt";

fn open_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("docs/2024")).unwrap();
    std::fs::write(dir.path().join(NAME), vec![b'x'; 4096]).unwrap();
    // A trusted, constant path for the baseline.
    let std_path = dir.path().join(NAME);
    let rules = PathRules::new();
    let safe_path = rules.parse(NAME).unwrap();

    let mut group = c.benchmark_group("open_read_4k");
    let mut buf = Vec::with_capacity(8192);
    group.bench_function(BenchmarkId::from_parameter("std_fs"), |b| {
        b.iter(|| {
            buf.clear();
            let mut file = std::fs::File::open(black_box(&std_path)).unwrap();
            file.read_to_end(&mut buf).unwrap();
            black_box(buf.len())
        });
    });
    let mut roots = vec![(
        "safe_root_walk",
        SafeRoot::builder(dir.path())
            .resolver(Resolver::Walk)
            .open()
            .unwrap(),
    )];
    if let Ok(kernel) = SafeRoot::builder(dir.path())
        .resolver(Resolver::Kernel)
        .open()
    {
        roots.insert(0, ("safe_root_openat2", kernel));
    }
    for (name, root) in &roots {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                buf.clear();
                let mut file = root.open(black_box(&safe_path)).unwrap();
                file.read_to_end(&mut buf).unwrap();
                black_box(buf.len())
            });
        });
    }
    group.bench_function(BenchmarkId::from_parameter("parse_then_openat2"), |b| {
        let root = &roots[0].1;
        b.iter(|| {
            buf.clear();
            let path = rules.parse_encoded(black_box(NAME)).unwrap();
            let mut file = root.open(&path).unwrap();
            file.read_to_end(&mut buf).unwrap();
            black_box(buf.len())
        });
    });
    group.finish();
}

criterion_group!(benches, open_read);
criterion_main!(benches);
