//! The model zoo. Every model is built from a config whose widths are data and declares its
//! channel groups, so that pruning, masking and slicing work on all of them alike.

pub mod mobilenet;
pub mod resnet;
pub mod resnet_cifar;
pub mod vgg;

pub use mobilenet::{MobileNetV1, MobileNetV1Config, MobileNetV2, MobileNetV2Config};
pub use resnet::{ResNet, ResNetConfig};
pub use resnet_cifar::{ResNetCifar, ResNetCifarConfig, Shortcut};
pub use vgg::{Vgg, VggConfig};
