//! The paper profile's structure checks: every row's teacher has the spec's BatchNorm count, and
//! its F8L8 student quantizes exactly the first conv, the classifier and the first and last
//! activation quantizers at 8 bits (F{k}L{k}: nothing at 8).
#![allow(clippy::unwrap_used)] // helpers of tests, not library code

use fdda::BitPolicy;
use fdda::paper::{PaperModel, SETTINGS, paper_rows, row_sites};

#[test]
fn every_row_has_the_spec_bn_count_and_f8l8_sites() {
    let first_last = |m: PaperModel| match m {
        PaperModel::ResNet18 => ["conv1", "fc"],
        PaperModel::MobileNetV1 => ["stem.conv", "fc"],
        PaperModel::MobileNetV2 => ["features.0.0", "classifier.1"],
        PaperModel::RegNetX600MF => ["stem.0", "fc"],
    };
    for row in paper_rows() {
        for (name, policy) in SETTINGS {
            let s = row_sites(&row, policy, 64).unwrap();
            assert_eq!(s.bn_layers, row.bn_layers, "{} {name}", row.name);
            match policy {
                BitPolicy::FirstLast8 { .. } => {
                    assert_eq!(s.eight_bit_weights, first_last(row.model), "{} {name}", row.name);
                    assert_eq!(s.eight_bit_activations, [0, s.activations - 1], "{} {name}", row.name);
                }
                BitPolicy::Uniform { .. } => {
                    assert!(s.eight_bit_weights.is_empty() && s.eight_bit_activations.is_empty(), "{name}");
                }
            }
        }
    }
}
