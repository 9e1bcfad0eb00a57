//! The oracle's plain networks (`tests/seq_oracle`) as library models: the
//! one place the tests translate between the two.
#![allow(dead_code)]

use crate::seq_oracle::{AttnParams, BilinearParams, Block, LinearParams, MaskKind, SeqNet};
use nalgebra::DMatrix;
use tensor_similarity::{Attention, Bilinear, Linear, Mask, Model};

pub fn linear(p: &LinearParams) -> Linear<f64> {
    Linear::new(p.w.clone(), p.b.clone()).unwrap()
}

pub fn bilinear(p: &BilinearParams) -> Bilinear<f64> {
    Bilinear::builder(p.l.clone(), p.r.clone())
        .left_bias(p.bl.clone())
        .right_bias(p.br.clone())
        .down(p.d.clone())
        .down_bias(p.bd.clone())
        .residual(p.s)
        .build()
        .unwrap()
}

pub fn mask(m: &MaskKind) -> Mask {
    match m {
        MaskKind::Causal => Mask::Causal,
        MaskKind::Full => Mask::None,
        MaskKind::Diagonal => Mask::Diagonal,
        MaskKind::Matrix(w) => Mask::Matrix(w.clone()),
    }
}

/// Every optional setting left at `None` is left out of the builder, so
/// that the library's defaults are what is tested against the oracle's.
pub fn attention(p: &AttnParams) -> Attention<f64> {
    let mut b = if p.quadratic {
        assert_eq!(p.q1, p.q2);
        assert_eq!(p.k1, p.k2);
        Attention::quadratic(
            p.heads,
            p.q1.clone(),
            p.k1.clone(),
            p.v.clone(),
            p.o.clone(),
        )
    } else {
        Attention::builder(
            p.heads,
            p.q1.clone(),
            p.k1.clone(),
            p.q2.clone(),
            p.k2.clone(),
            p.v.clone(),
            p.o.clone(),
        )
    };
    if let Some(x) = &p.bq1 {
        b = b.q1_bias(x.clone());
    }
    if let Some(x) = &p.bk1 {
        b = b.k1_bias(x.clone());
    }
    if let Some(x) = &p.bq2 {
        b = b.q2_bias(x.clone());
    }
    if let Some(x) = &p.bk2 {
        b = b.k2_bias(x.clone());
    }
    if let Some(x) = &p.bv {
        b = b.v_bias(x.clone());
    }
    if let Some(x) = &p.bo {
        b = b.o_bias(x.clone());
    }
    if let Some(base) = p.rotary {
        b = b.rotary(base);
    }
    if let Some(m) = &p.mask {
        b = b.mask(mask(m));
    }
    if let Some(c) = p.score_scale {
        b = b.score_scale(c);
    }
    if let Some(a) = p.alpha {
        b = b.scale(a);
    }
    if let Some(r) = p.skip {
        b = b.skip(r);
    }
    b.build().unwrap()
}

/// The network as a sequence model.
pub fn model(net: &SeqNet) -> Model<f64> {
    let mut b = Model::builder().sequence();
    for block in &net.blocks {
        b = match block {
            Block::Linear(p) => b.block(linear(p)),
            Block::Bilinear(p) => b.block(bilinear(p)),
            Block::Attention(p) => b.block(attention(p)),
        };
    }
    b.build().unwrap()
}

/// A position-wise network as an ordinary (vector) model.
pub fn vector_model(net: &SeqNet) -> Model<f64> {
    let mut b = Model::builder();
    for block in &net.blocks {
        b = match block {
            Block::Linear(p) => b.block(linear(p)),
            Block::Bilinear(p) => b.block(bilinear(p)),
            Block::Attention(_) => panic!("attention is not position-wise"),
        };
    }
    b.build().unwrap()
}

/// The library's forward pass on `X` (`n × d`).
pub fn forward(model: &Model<f64>, x: &DMatrix<f64>) -> DMatrix<f64> {
    model.forward_sequence(x).unwrap()
}
