//! The model zoo. Every model is built from a config whose widths are data and declares its
//! channel groups, so that pruning, masking and slicing work on all of them alike.

pub mod mlp;
pub mod mobilenet;
pub mod regnet;
pub mod resnet;
pub mod resnet_cifar;
pub mod sr;
pub mod vgg;
pub mod vit;

pub use mlp::{Mlp, MlpConfig};
pub use mobilenet::{MobileNetV1, MobileNetV1Config, MobileNetV2, MobileNetV2Config};
pub use regnet::{RegNet, RegNetConfig};
pub use resnet::{BlockKind, ResNet, ResNetConfig};
pub use resnet_cifar::{ResNetCifar, ResNetCifarConfig, Shortcut};
pub use sr::{DIV2K_MEAN, Edsr, EdsrConfig, Rdn, RdnConfig, SrResNet, SrResNetConfig, SrSetting, build_up, mean_shift};
pub use vgg::{Vgg, VggConfig};
pub use vit::{Block as VitBlock, Vit, VitConfig, resize_pos_embed};
