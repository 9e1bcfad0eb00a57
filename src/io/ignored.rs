//! The keys of a run config's `"model"` section that cannot change the
//! function at eval ([SPEC §8](crate::spec#8-sequence-model-files)), and
//! why: dropout, initialisation, the optimiser and its schedule, the
//! training loop, where and how training ran, logging.
//!
//! The model read is the function the checkpoint computes at eval, from
//! its stored weights: none of these reaches it. They are matched by exact
//! name, by a prefix or suffix, or by one `_`-separated word of the key,
//! all lower case; a key that merely looks like one (`eps`, which a norm
//! reads; `name`, which may choose an architecture) is not matched and
//! stays refused. A key the layout reads is never matched.

/// Why a key cannot change the function: dropout.
const DROPOUT: &str = "dropout: the identity at eval";
/// … initialisation.
const INIT: &str = "initialisation: the trained weights are read";
/// … the optimiser.
const OPTIMISER: &str = "optimiser: training only";
/// … the learning-rate schedule.
const SCHEDULE: &str = "schedule: training only";
/// … the training loop.
const TRAINING: &str = "training loop: training only";
/// … where and how training ran.
const ENVIRONMENT: &str = "run environment: where and how training ran";
/// … logging.
const LOGGING: &str = "logging";

/// How a rule matches a key.
#[derive(Clone, Copy)]
enum Rule {
    /// The whole key.
    Exact(&'static str),
    /// The key's start.
    Prefix(&'static str),
    /// The key's end.
    Suffix(&'static str),
    /// One `_`-separated word of the key.
    Word(&'static str),
}

use Rule::{Exact, Prefix, Suffix, Word};

/// The rules, each with its reason; the first that matches gives it.
const RULES: &[(Rule, &str)] = &[
    // Dropout and its variants: attn_dropout, resid_dropout, p_dropout,
    // dropout_p, hidden_dropout_prob, resid_pdrop (GPT-2), drop_path_rate,
    // layerdrop. All are the identity in eval mode.
    (Word("dropout"), DROPOUT),
    (Word("pdrop"), DROPOUT),
    (Word("layerdrop"), DROPOUT),
    (Word("droppath"), DROPOUT),
    (Prefix("drop_"), DROPOUT),
    // Initialisation: init_std, init_scale, weight_init, initializer_range.
    (Word("init"), INIT),
    (Prefix("initiali"), INIT),
    // The optimiser (its own eps only where it is unambiguously its:
    // adam_eps, optimizer_eps, or anything in an `optimizer` section).
    (Exact("lr"), OPTIMISER),
    (Exact("learning_rate"), OPTIMISER),
    (Exact("weight_decay"), OPTIMISER),
    (Exact("wd"), OPTIMISER),
    (Exact("betas"), OPTIMISER),
    (Exact("beta1"), OPTIMISER),
    (Exact("beta2"), OPTIMISER),
    (Exact("momentum"), OPTIMISER),
    (Exact("nesterov"), OPTIMISER),
    (Exact("amsgrad"), OPTIMISER),
    (Exact("optimizer"), OPTIMISER),
    (Exact("optimiser"), OPTIMISER),
    (Exact("optim"), OPTIMISER),
    (Exact("grad_clip"), OPTIMISER),
    (Exact("clip_grad"), OPTIMISER),
    (Exact("clip_grad_norm"), OPTIMISER),
    (Exact("grad_norm_clip"), OPTIMISER),
    (Exact("max_grad_norm"), OPTIMISER),
    (Exact("gradient_clipping"), OPTIMISER),
    (Exact("label_smoothing"), OPTIMISER),
    (Prefix("adam_"), OPTIMISER),
    (Prefix("adamw_"), OPTIMISER),
    (Prefix("sgd_"), OPTIMISER),
    (Prefix("optimizer_"), OPTIMISER),
    (Prefix("optimiser_"), OPTIMISER),
    (Prefix("optim_"), OPTIMISER),
    (Suffix("_weight_decay"), OPTIMISER),
    // The learning-rate schedule: lr_decay_iters, min_lr, warmup_steps.
    (Prefix("lr_"), SCHEDULE),
    (Suffix("_lr"), SCHEDULE),
    (Suffix("_learning_rate"), SCHEDULE),
    (Prefix("warmup"), SCHEDULE),
    (Exact("scheduler"), SCHEDULE),
    (Exact("schedule"), SCHEDULE),
    (Prefix("scheduler_"), SCHEDULE),
    (Prefix("cooldown"), SCHEDULE),
    // The training loop.
    (Exact("train"), TRAINING),
    (Exact("training"), TRAINING),
    (Exact("steps"), TRAINING),
    (Exact("max_steps"), TRAINING),
    (Exact("total_steps"), TRAINING),
    (Exact("train_steps"), TRAINING),
    (Exact("num_steps"), TRAINING),
    (Exact("n_steps"), TRAINING),
    (Exact("iters"), TRAINING),
    (Exact("max_iters"), TRAINING),
    (Exact("num_iters"), TRAINING),
    (Exact("n_iters"), TRAINING),
    (Exact("train_iters"), TRAINING),
    (Exact("eval_iters"), TRAINING),
    (Exact("eval_steps"), TRAINING),
    (Exact("save_steps"), TRAINING),
    (Exact("logging_steps"), TRAINING),
    (Exact("epochs"), TRAINING),
    (Exact("batch_size"), TRAINING),
    (Exact("resume"), TRAINING),
    (Prefix("grad_accum"), TRAINING),
    (Prefix("gradient_accumulation"), TRAINING),
    (Exact("accumulate_grad_batches"), TRAINING),
    (Suffix("_epochs"), TRAINING),
    (Suffix("_batch_size"), TRAINING),
    (Suffix("_every"), TRAINING),
    (Suffix("_interval"), TRAINING),
    // Where and how training ran: compile, seed, device, the training
    // dtype (the stored tensors are read as stored, computed in f64).
    (Exact("compile"), ENVIRONMENT),
    (Exact("torch_compile"), ENVIRONMENT),
    (Prefix("compile_"), ENVIRONMENT),
    (Exact("seed"), ENVIRONMENT),
    (Suffix("_seed"), ENVIRONMENT),
    (Exact("device"), ENVIRONMENT),
    (Exact("devices"), ENVIRONMENT),
    (Exact("dtype"), ENVIRONMENT),
    (Suffix("_dtype"), ENVIRONMENT),
    (Exact("precision"), ENVIRONMENT),
    (Exact("mixed_precision"), ENVIRONMENT),
    (Exact("amp"), ENVIRONMENT),
    (Exact("bf16"), ENVIRONMENT),
    (Exact("fp16"), ENVIRONMENT),
    (Exact("tf32"), ENVIRONMENT),
    (Exact("deterministic"), ENVIRONMENT),
    (Exact("num_workers"), ENVIRONMENT),
    (Exact("gradient_checkpointing"), ENVIRONMENT),
    (Exact("activation_checkpointing"), ENVIRONMENT),
    (Exact("out_dir"), ENVIRONMENT),
    (Exact("output_dir"), ENVIRONMENT),
    (Exact("checkpoint_dir"), ENVIRONMENT),
    (Exact("save_dir"), ENVIRONMENT),
    (Exact("data_dir"), ENVIRONMENT),
    (Exact("dataset"), ENVIRONMENT),
    // Logging.
    (Prefix("wandb"), LOGGING),
    (Prefix("tensorboard"), LOGGING),
    (Prefix("log_"), LOGGING),
    (Prefix("logging"), LOGGING),
    (Exact("project"), LOGGING),
    (Exact("run_name"), LOGGING),
    (Exact("experiment_name"), LOGGING),
    (Exact("tags"), LOGGING),
    (Exact("notes"), LOGGING),
    (Exact("verbose"), LOGGING),
];

/// Why `key` cannot change the function at eval, if it is one of the keys
/// that cannot (see the module's documentation).
pub(crate) fn why(key: &str) -> Option<&'static str> {
    RULES.iter().find_map(|&(rule, why)| {
        let hit = match rule {
            Exact(name) => key == name,
            Prefix(start) => key.starts_with(start),
            Suffix(end) => key.ends_with(end),
            Word(word) => key.split('_').any(|w| w == word),
        };
        hit.then_some(why)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_free_keys_are_matched() {
        for key in [
            "dropout",
            "attn_dropout",
            "resid_dropout",
            "embd_dropout",
            "p_dropout",
            "dropout_p",
            "hidden_dropout_prob",
            "attention_probs_dropout_prob",
            "resid_pdrop",
            "drop_path_rate",
            "layerdrop",
            "init_std",
            "init_scale",
            "weight_init",
            "initializer_range",
            "lr",
            "learning_rate",
            "min_lr",
            "lr_decay_iters",
            "weight_decay",
            "betas",
            "beta1",
            "beta2",
            "adam_eps",
            "adam_epsilon",
            "optimizer_eps",
            "optimizer",
            "warmup_steps",
            "warmup_iters",
            "scheduler",
            "max_steps",
            "epochs",
            "num_epochs",
            "batch_size",
            "micro_batch_size",
            "grad_clip",
            "max_grad_norm",
            "gradient_accumulation_steps",
            "compile",
            "seed",
            "data_seed",
            "device",
            "dtype",
            "param_dtype",
            "wandb",
            "wandb_project",
            "log_every",
            "eval_interval",
            "logging_steps",
        ] {
            assert!(why(key).is_some(), "{key}");
        }
    }

    #[test]
    fn keys_that_may_change_the_function_are_not() {
        // A norm's eps, the architecture's name, rotary settings, widths,
        // activations, tied embeddings: none is function-free.
        for key in [
            "eps",
            "epsilon",
            "norm_eps",
            "layer_norm_eps",
            "rms_norm_eps",
            "name",
            "model_type",
            "rotary_dim",
            "rope_theta",
            "rope_scaling",
            "d_ff",
            "activation",
            "tie_word_embeddings",
            "bias",
            "n_kv_head",
            "decay",
            "initial_state",
            "Dropout",
        ] {
            assert_eq!(why(key), None, "{key}");
        }
    }
}
