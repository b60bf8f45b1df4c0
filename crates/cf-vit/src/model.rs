//! The two-stage network (sections 2.2-2.6): a backbone shared by both stages, the coarse
//! position table `P_c` (`pos_embed_coarse`; the backbone's own `pos_embed` is the fine table
//! `P_f`) and the reuse MLP (`reuse.*`).

use crate::backbone::{Stage, TokenBackbone};
use crate::config::CfVitConfig;
use crate::error::{CfVitError, Result};
use crate::regions::{ClassAttention, Selection, fine_sequence, rank_descending};
use crate::reuse::ReuseMlp;
use candle_core::{D, DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use compress_nn::layers::bilinear_align_corners;

/// What the fine stage takes from the coarse stage.
#[derive(Debug, Clone)]
pub struct CoarseOut {
    /// Coarse logits `[B, K]`.
    pub logits: Tensor,
    /// Normalised output tokens `z_c = LN(X^L_c)`, `[B, 1 + N_c, D]`.
    pub z: Tensor,
    /// Input embeddings `[cls; E(I_c)] + P_c`, `[B, 1 + N_c, D]`: the tokens U keeps.
    pub x_in: Tensor,
    /// Patch scores from the global class attention, `[B, N_c]` (detached).
    pub scores: Tensor,
}

impl CoarseOut {
    /// The rows `idx` of every field (the images that go on to the fine stage).
    pub fn select(&self, idx: &Tensor) -> Result<Self> {
        Ok(Self {
            logits: self.logits.index_select(idx, 0)?,
            z: self.z.index_select(idx, 0)?,
            x_in: self.x_in.index_select(idx, 0)?,
            scores: self.scores.index_select(idx, 0)?,
        })
    }
}

/// Early-exit inference of a batch.
#[derive(Debug, Clone)]
pub struct Inference {
    /// Logits `[B, K]`: coarse where the image exited, fine otherwise.
    pub logits: Tensor,
    /// Whether each image exited at the coarse stage.
    pub exited: Vec<bool>,
}

/// A CF-ViT over backbone `B`.
pub struct CfVit<B: TokenBackbone> {
    backbone: B,
    pos_coarse: Tensor,
    reuse: ReuseMlp,
    cfg: CfVitConfig,
    varmap: VarMap,
    device: Device,
}

impl<B: TokenBackbone> std::fmt::Debug for CfVit<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CfVit").field("cfg", &self.cfg).finish()
    }
}

impl<B: TokenBackbone> CfVit<B> {
    /// Adds CF-ViT's own variables to `backbone` (built from the same `vb` over `varmap`): `P_c`
    /// trunc-normal(0.02) and the reuse MLP.
    pub fn new(backbone: B, cfg: CfVitConfig, vb: VarBuilder, varmap: VarMap) -> Result<Self> {
        cfg.validate(backbone.depth())?;
        let d = backbone.dim();
        let want = 1 + cfg.fine_tokens();
        let have = backbone.pos_embed().dim(1)?;
        if have != want {
            return Err(CfVitError::Config(format!(
                "the backbone's position table has {have} rows; a {0}x{0} fine grid needs {want}",
                2 * cfg.coarse_side
            )));
        }
        let tn = candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        let pos_coarse = vb.get_with_hints((1, 1 + cfg.coarse_tokens(), d), "pos_embed_coarse", tn)?;
        let reuse = ReuseMlp::new(d, cfg.reuse_ratio, vb.pp("reuse"))?;
        let device = vb.device().clone();
        Ok(Self { backbone, pos_coarse, reuse, cfg, varmap, device })
    }

    /// The configuration.
    pub fn config(&self) -> &CfVitConfig {
        &self.cfg
    }

    /// The backbone.
    pub fn backbone(&self) -> &B {
        &self.backbone
    }

    /// Every variable (checkpoints, optimizers).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The device of the variables.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn with_cls(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, _, d) = tokens.dims3()?;
        let cls = self.backbone.cls_token().broadcast_as((b, 1, d))?;
        Ok(Tensor::cat(&[&cls, tokens], 1)?)
    }

    /// Coarse stage on fine images `[B, C, S_f, S_f]` (resized here to `S_f / 2`, bilinear with
    /// aligned corners): `X_c = [cls; E(I_c)] + P_c`, the blocks with the class-attention EMA
    /// over blocks `ema_from_layer..`, `z_c = LN(X^L_c)`.
    pub fn forward_coarse(&self, img_f: &Tensor, train: bool) -> Result<CoarseOut> {
        let img_c = bilinear_align_corners(img_f, self.cfg.coarse_image())?;
        let x_in = self.with_cls(&self.backbone.embed(&img_c, train)?)?.broadcast_add(&self.pos_coarse)?;
        let mut ema = ClassAttention::new(self.cfg.beta);
        let mut x = x_in.clone();
        for i in 0..self.backbone.depth() {
            let (y, attn) = self.backbone.block(i, &x)?;
            if i >= self.cfg.ema_from_layer {
                ema.update(&attn)?;
            }
            x = y;
        }
        let z = self.backbone.norm(&x)?;
        let logits = self.backbone.logits(&z, Stage::Coarse)?;
        let scores =
            ema.scores()?.ok_or_else(|| CfVitError::Config("no block entered the class-attention EMA".into()))?;
        Ok(CoarseOut { logits, z, x_in, scores })
    }

    /// The fine stage's input sequence: `[cls; E(I_f) + R_up] + P_f`, then (with a selection)
    /// the class token, the children of S and the coarse input tokens of U.
    pub fn fine_tokens(&self, img_f: &Tensor, coarse: &CoarseOut, selection: Selection, train: bool) -> Result<Tensor> {
        let n = self.cfg.coarse_side;
        let t_c = coarse.z.dim(1)?;
        let reuse = self.reuse.forward(&coarse.z.narrow(1, 1, t_c - 1)?, n)?;
        let mut x_f = self.with_cls(&(self.backbone.embed(img_f, train)? + reuse)?)?;
        if selection != Selection::Off || self.cfg.pos_fine_without_selection {
            x_f = x_f.broadcast_add(self.backbone.pos_embed())?;
        }
        if selection == Selection::Off {
            return Ok(x_f);
        }
        let (b, t_f, d) = x_f.dims3()?;
        let scores: Vec<Vec<f32>> = coarse.scores.to_dtype(DType::F32)?.to_vec2()?;
        let stride = t_f + t_c;
        let mut idx = Vec::with_capacity(b * self.cfg.fine_len());
        for (i, s) in scores.iter().enumerate() {
            let order = rank_descending(s);
            idx.extend(fine_sequence(&order, self.cfg.k(), n, selection).into_iter().map(|p| (i * stride + p) as u32));
        }
        let len = idx.len() / b.max(1);
        let idx = Tensor::from_vec(idx, b * len, &self.device)?;
        let all = Tensor::cat(&[&x_f, &coarse.x_in], 1)?.reshape((b * stride, d))?;
        Ok(all.index_select(&idx, 0)?.reshape((b, len, d))?)
    }

    /// Fine-stage logits `[B, K]`.
    pub fn forward_fine(
        &self,
        img_f: &Tensor,
        coarse: &CoarseOut,
        selection: Selection,
        train: bool,
    ) -> Result<Tensor> {
        let mut x = self.fine_tokens(img_f, coarse, selection, train)?;
        for i in 0..self.backbone.depth() {
            x = self.backbone.block(i, &x)?.0;
        }
        Ok(self.backbone.logits(&self.backbone.norm(&x)?, Stage::Fine)?)
    }

    /// Both stages on every image (training, "anytime" evaluation): `(y_c, y_f)`.
    pub fn forward_train(&self, img_f: &Tensor, selection: Selection, train: bool) -> Result<(Tensor, Tensor)> {
        let coarse = self.forward_coarse(img_f, train)?;
        let y_f = self.forward_fine(img_f, &coarse, selection, train)?;
        Ok((coarse.logits, y_f))
    }

    /// Early-exit inference (section 2.3): the coarse stage on the whole batch; images whose top-1
    /// softmax confidence is at least `eta` keep the coarse logits, the others (only they) run
    /// the fine stage with selection on.
    pub fn infer(&self, img_f: &Tensor, eta: f64) -> Result<Inference> {
        let coarse = self.forward_coarse(img_f, false)?;
        let conf: Vec<f32> =
            candle_nn::ops::softmax_last_dim(&coarse.logits.to_dtype(DType::F32)?)?.max(D::Minus1)?.to_vec1()?;
        let exited: Vec<bool> = conf.iter().map(|&c| f64::from(c) >= eta).collect();
        let rest: Vec<u32> = (0..conf.len() as u32).filter(|&i| !exited[i as usize]).collect();
        if rest.is_empty() {
            return Ok(Inference { logits: coarse.logits, exited });
        }
        if rest.len() == conf.len() {
            let logits = self.forward_fine(img_f, &coarse, Selection::Informative, false)?;
            return Ok(Inference { logits, exited });
        }
        let idx = Tensor::from_vec(rest.clone(), rest.len(), &self.device)?;
        let sub = coarse.select(&idx)?;
        let fine = self.forward_fine(&img_f.index_select(&idx, 0)?, &sub, Selection::Informative, false)?;
        let logits = coarse.logits.index_add(&idx, &(fine - &sub.logits)?, 0)?;
        Ok(Inference { logits, exited })
    }

    /// MACs per image: `(coarse, fine)`, the fine stage with selection on and the reuse MLP
    /// counted (section 2.9 plus the reuse cost).
    pub fn stage_macs(&self) -> (u64, u64) {
        let (n, d) = (self.cfg.coarse_side, self.backbone.dim() as u64);
        let bb = &self.backbone;
        let t_c = 1 + n * n;
        let coarse = bb.embed_macs(n) + bb.blocks_macs(t_c) + bb.head_macs(t_c);
        let reuse = (n * n) as u64 * 2 * self.cfg.reuse_ratio as u64 * d * d;
        let t_f = self.cfg.fine_len();
        let fine = bb.embed_macs(2 * n) + reuse + bb.blocks_macs(t_f) + bb.head_macs(t_f);
        (coarse, fine)
    }
}
