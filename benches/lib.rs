//! Criterion benches (`cargo bench -p compress-benches`): the toolkit's CPU ops against candle's
//! on the same inputs in the same run, so the ratio is meaningful on a shared machine. The
//! PyTorch twin of the training-step bench is `reference/resnet20_step.py`.
