//! [`Layout`]: where a file keeps each block's tensors, by metadata or by
//! the names of a research layout.

/// Where the blocks' tensors are found in a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Layout {
    /// Described by `__metadata__["tensor_similarity"]`; any chain of
    /// linear, bilinear and attention blocks (a model with attention is a
    /// sequence model, and only this layout writes one).
    /// [`save`](crate::io::save) names the tensors `blocks.{i}.{role}`.
    #[default]
    Described,
    /// `embed.weight`, then `body.{i}.l.weight`, `body.{i}.r.weight`,
    /// `body.{i}.d.weight` for `i = 0, 1, …`, then `head.weight`, each with
    /// an optional `.bias`: a linear embedding, bilinear blocks with down
    /// projections, and a linear head.
    EmbedBodyHead,
    /// `bi_linear.weight` (fused `[L; R]`, `2h × m`) with an optional
    /// `bi_linear.bias`, then `projection.weight` (+ bias): a bilinear
    /// block without down projection, then a linear layer.
    BiLinearProjection,
    /// The research `Transformer` (a sequence model): `embed.weight`, per
    /// layer `i` `body.{i}.attn.{q1,k1,q2,k2,v,o}.weight` (+ `.bias`) and
    /// `body.{i}.mlp.{l,r,d}.weight` (+ `.bias`), then `head.weight`; one `α`
    /// for both, attention with `r = 1 − α`, the MLP with lerp residual
    /// `α`. Heads, mask and `α` come from the run's config (`n_head`,
    /// `mask`, `scale`) or [`LoadOptions`](crate::io::LoadOptions); its
    /// attention always applies rotary with base 10 000, as the research
    /// code hard-codes (no key or option changes it).
    Transformer,
    /// The research group's attention-only language model as its training
    /// runs save it (a sequence model): `embed.weight` `[vocab, d]` (a
    /// table), `layers.{i}.{q1,k1,q2,k2}` (bilinear) or `layers.{i}.{q,k}`
    /// (quadratic) `.weight` (+ `.bias`), `layers.{i}.{v,o}.weight`,
    /// `unembed.weight` `[vocab, d]` and an optional
    /// `final_norm.running_mean_energy` folded into the unembedding.
    /// Additive residual, `α = attn_scale`, causal, rotary base `rope_base`,
    /// all from the run's config ([SPEC §8](crate::spec#8-sequence-model-files)).
    AttentionLm,
}

impl Layout {
    /// A short name, as error messages and `inspect` show it.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Described => "tensor_similarity metadata",
            Layout::EmbedBodyHead => "embed/body/head",
            Layout::BiLinearProjection => "bi_linear/projection",
            Layout::Transformer => "research Transformer (embed/body.{i}.attn,mlp/head)",
            Layout::AttentionLm => "attention-only LM (embed/layers.{i}/unembed)",
        }
    }
}
