//! The generated model: one struct holding the runtime's layer structs as fields, activations typed
//! by their shapes, and plain methods (construct, forward, training forward, backward, predict,
//! save/load) over a workspace sized for the largest batch seen. Shapes come from the checked
//! model (valid by construction) and the steps, fusions and buffers from its plan, the same plan
//! the dynamic executor interprets.

use std::collections::BTreeSet;

use cnnc_core::{
    CheckedLayer, Clamp, Fusion, Grad, LayerConfig, Model, Plan as ExecPlan, Shape, Slice, Source,
};
use proc_macro2::{Ident, Literal, TokenStream};
use quote::{format_ident, quote};
use syn::{Attribute, Path, Visibility};

use crate::error::Error;
use crate::names::field_names;

/// What to call the generated model and where it comes from.
#[derive(Clone)]
pub struct Options {
    /// Name of the generated struct.
    pub name: Ident,
    /// Its visibility.
    pub vis: Visibility,
    /// Attributes put on the struct (doc comments, `#[allow]`, ...).
    pub attrs: Vec<Attribute>,
    /// Path of the `cnnc` facade crate in the generated code (`::cnnc` unless re-exported).
    pub krate: Path,
    /// Where the spec comes from (its path, or the Rust file of an inline spec): the value of
    /// the model's `SOURCE` constant.
    pub source: String,
}

impl Options {
    /// A public model named `name` from `source`, naming the facade `::cnnc`.
    pub fn new(name: Ident, source: impl Into<String>) -> Self {
        Options {
            name,
            vis: syn::parse_quote!(pub),
            attrs: Vec::new(),
            krate: syn::parse_quote!(::cnnc),
            source: source.into(),
        }
    }
}

/// The Rust items (struct, inherent impl, `Visit` impl) of `model`, exactly what `cnn_model!`
/// expands to. Fails if the model has no layers or ends in an image.
pub fn generate(model: &Model, options: &Options) -> Result<TokenStream, Error> {
    generate_with(model, options, false)
}

/// [`generate`], with `marks` placing `__cnnc_comment!("...")` statements where `cnnc codegen`
/// prints shape comments.
pub(crate) fn generate_with(
    model: &Model,
    options: &Options,
    marks: bool,
) -> Result<TokenStream, Error> {
    let last = model.layers().last().ok_or(Error::NoLayers)?;
    if let Shape::Chw(_) = last.output_shape() {
        return Err(Error::ImageOutput {
            layer: last.name().to_owned(),
            shape: last.output_shape().to_string(),
        });
    }
    let exec = ExecPlan::new(model);
    // Sequential models hold two gradient buffers, all their plan uses; graph models as many as
    // their plan says.
    let sequential = model.is_sequential();
    if sequential && exec.grad_buffers() > 2 {
        return Err(inconsistent(
            last,
            "the plan needs more than two gradient buffers",
        ));
    }
    let fields = field_names(model.layers().iter().map(CheckedLayer::name));
    let layers: Vec<Plan<'_>> = model
        .layers()
        .iter()
        .zip(fields)
        .enumerate()
        .map(|(index, (layer, field))| Plan {
            layer,
            index,
            field,
            fused: exec.is_fused(index),
        })
        .collect();
    let generator = Gen {
        model,
        options,
        layers: &layers,
        exec: &exec,
        marks,
        sequential,
    };
    generator.items()
}

/// One layer as the generator sees it.
pub(crate) struct Plan<'a> {
    pub(crate) layer: &'a CheckedLayer,
    pub(crate) index: usize,
    pub(crate) field: Ident,
    /// Applied by the step of a layer before it ([`Fusion`]): skipped in forward and backward.
    pub(crate) fused: bool,
}

impl Plan<'_> {
    fn has_tensors(&self) -> bool {
        !self.layer.tensors().is_empty()
    }

    /// `layer1.0: conv2d [3, 32, 32] -> [32, 32, 32]`; a layer that reads other layers than
    /// the one before it names them: `add(bn2, relu) [16, 8, 8], [16, 8, 8] -> [16, 8, 8]`.
    pub(crate) fn summary(&self, model: &Model) -> String {
        let l = self.layer;
        if l.inputs() == [Source::previous(self.index)] {
            return format!(
                "{}: {} {} -> {}",
                l.name(),
                l.kind().keyword(),
                l.input_shape(),
                l.output_shape()
            );
        }
        let names: Vec<&str> = l
            .inputs()
            .iter()
            .map(|source| match *source {
                Source::Input => "input",
                Source::Layer(i) => model.layers()[i].name(),
            })
            .collect();
        let shapes: Vec<String> = l.input_shapes().iter().map(Shape::to_string).collect();
        format!(
            "{}: {}({}) {} -> {}",
            l.name(),
            l.kind().keyword(),
            names.join(", "),
            shapes.join(", "),
            l.output_shape()
        )
    }
}

pub(crate) struct Gen<'a> {
    pub(crate) model: &'a Model,
    pub(crate) options: &'a Options,
    pub(crate) layers: &'a [Plan<'a>],
    pub(crate) exec: &'a ExecPlan,
    pub(crate) marks: bool,
    /// Every layer reads the one before it: the chain code generation has always written,
    /// one binding `x` shadowed step by step and two gradient buffers used in turn.
    pub(crate) sequential: bool,
}

/// Doc attributes, one per line, as prettyplease prints `///` comments.
fn docs(lines: &[String]) -> TokenStream {
    lines
        .iter()
        .map(|line| {
            let text = if line.is_empty() {
                String::new()
            } else {
                format!(" {line}")
            };
            quote!(#[doc = #text])
        })
        .collect()
}

pub(crate) fn lit(n: usize) -> Literal {
    Literal::usize_unsuffixed(n)
}

pub(crate) fn pair(p: [usize; 2]) -> TokenStream {
    let [a, b] = p.map(lit);
    quote!([#a, #b])
}

/// `12,345` for documentation.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Gen<'_> {
    pub(crate) fn krate(&self) -> &Path {
        &self.options.krate
    }

    /// Path of an item the generated code needs but users do not.
    pub(crate) fn private(&self, item: TokenStream) -> TokenStream {
        let krate = self.krate();
        quote!(#krate::__private::#item)
    }

    /// Path of a public runtime item.
    pub(crate) fn rt(&self, item: TokenStream) -> TokenStream {
        let krate = self.krate();
        quote!(#krate::runtime::#item)
    }

    pub(crate) fn typed(&self, item: TokenStream) -> TokenStream {
        self.rt(quote!(typed::#item))
    }

    /// The `use` that [`Gen::view_type`] relies on.
    pub(crate) fn use_views(&self) -> TokenStream {
        let typed = self.rt(quote!(typed));
        quote!(use #typed::{Features, Images};)
    }

    pub(crate) fn mark(&self, text: String) -> TokenStream {
        if self.marks {
            quote!(__cnnc_comment!(#text);)
        } else {
            TokenStream::new()
        }
    }

    /// The typed view of an activation, `Images<C, H, W, &[f32]>` or `Features<F, &[f32]>`, for
    /// bodies that import both names ([`Gen::use_views`]).
    pub(crate) fn view_type(shape: Shape) -> TokenStream {
        match shape {
            Shape::Chw(dims) => {
                let [c, h, w] = dims.map(lit);
                quote!(Images<#c, #h, #w, &[f32]>)
            }
            Shape::Flat(n) => {
                let n = lit(n);
                quote!(Features<#n, &[f32]>)
            }
        }
    }

    /// The runtime's `Shape` value for `shape`, as generated code spells it.
    pub(crate) fn shape_value(&self, shape: Shape) -> TokenStream {
        let ty = self.rt(quote!(Shape));
        match shape {
            Shape::Chw(d) => {
                let [c, h, w] = d.map(lit);
                quote!(#ty::Chw([#c, #h, #w]))
            }
            Shape::Flat(n) => {
                let n = lit(n);
                quote!(#ty::Flat(#n))
            }
        }
    }

    fn shape_array(shape: Shape) -> TokenStream {
        let dims = shape.dims().into_iter().map(lit);
        quote!([#(#dims),*])
    }

    fn items(&self) -> Result<TokenStream, Error> {
        let name = &self.options.name;
        let vis = &self.options.vis;
        let attrs = &self.options.attrs;
        let layers = self.rt(quote!(layers));
        let n_acts = lit(self.exec.buffers().len());
        let workspace = self.private(quote!(Workspace));

        let mut fields = Vec::new();
        for plan in self.layers {
            let field = &plan.field;
            let ty = format_ident!("{}", plan.layer.kind().layer_type());
            let l = plan.layer;
            let mut doc = if l.kind().is_merge() {
                let shapes: Vec<String> = l.input_shapes().iter().map(Shape::to_string).collect();
                format!(
                    "`{}`: `torch.{}`, {} -> {}",
                    l.name(),
                    l.kind().torch_name(),
                    shapes.join(", "),
                    l.output_shape()
                )
            } else {
                format!(
                    "`{}`: `torch.nn.{}`, {} -> {}",
                    l.name(),
                    l.kind().torch_name(),
                    l.input_shape(),
                    l.output_shape()
                )
            };
            if plan.has_tensors() {
                doc.push_str(&format!(", {} parameters", thousands(l.params())));
            }
            // A layer that applies the ones after it writes their output, not its own.
            let step = self.exec.step_of(plan.index);
            if step.layer == plan.index && step.last > plan.index {
                let applied: Vec<String> = (plan.index + 1..=step.last)
                    .map(|i| format!("`{}`", self.model.layers()[i].name()))
                    .collect();
                doc.push_str(&format!(
                    "; it applies {} too and writes {}",
                    applied.join(" and "),
                    self.exec.buffers()[step.output]
                ));
            }
            let doc = docs(&[doc + "."]);
            // Parametric layers are public so that their weights can be read and replaced; the
            // others are implementation details.
            let field_vis = if plan.has_tensors() {
                quote!(pub)
            } else {
                TokenStream::new()
            };
            fields.push(quote!(#doc #field_vis #field: #layers::#ty,));
        }

        let struct_doc = docs(&self.struct_doc());
        let consts = self.consts();
        let new = self.new_fn()?;
        let methods = self.methods();
        let rng = self.rng_methods();
        let (run_forward, run_backward) = if self.sequential {
            (self.run_forward(), self.run_backward())
        } else {
            (self.graph_forward(), self.graph_backward())
        };
        let workspace_type = if self.sequential {
            quote!(#workspace<#n_acts>)
        } else {
            let n_grads = lit(self.exec.grad_buffers());
            quote!(#workspace<#n_acts, #n_grads>)
        };
        let visit = self.visit_impl();
        let model = self.model_impls();
        Ok(quote! {
            #(#attrs)*
            #struct_doc
            #[derive(Clone, Debug)]
            #vis struct #name {
                #(#fields)*
                /// Activation and gradient buffers, sized for the largest batch seen.
                workspace: #workspace_type,
            }

            // A model's API is complete whether or not a crate uses all of it.
            #[allow(dead_code)]
            impl #name {
                #consts
                #new
                #methods
                #rng
                #run_forward
                #run_backward
            }

            #visit
            #model
        })
    }

    fn struct_doc(&self) -> Vec<String> {
        let m = self.model;
        let title = m.name().unwrap_or("A CNN");
        let mut lines = vec![
            // Escaped: a newline or `*/` in the path must not end the doc comment
            // `cnnc codegen` prints.
            format!(
                "{title}, generated by cnnc from `{}`.",
                self.options.source.escape_debug()
            ),
            String::new(),
            format!(
                "Input {} per sample, {} outputs, {} parameters. Layers:",
                m.input_shape(),
                m.output_shape().numel(),
                thousands(m.total_params())
            ),
            String::new(),
        ];
        lines.extend(
            self.layers
                .iter()
                .map(|p| format!("- `{}`", p.summary(self.model))),
        );
        lines
    }

    fn consts(&self) -> TokenStream {
        let m = self.model;
        let input = Self::shape_array(m.input_shape());
        let outputs = lit(m.output_shape().numel());
        let params = lit(usize::try_from(m.total_params()).unwrap_or(usize::MAX));
        let source = &self.options.source;
        let model_name = m
            .name()
            .map_or_else(|| self.options.name.to_string(), str::to_owned);
        quote! {
            /// Per-sample input shape `[channels, height, width]`.
            pub const INPUT_SHAPE: [usize; 3] = #input;
            /// Outputs (logits) per sample.
            pub const OUTPUT_SIZE: usize = #outputs;
            /// Number of classes: the outputs per sample, [`Self::OUTPUT_SIZE`].
            pub const CLASSES: usize = #outputs;
            /// Trainable parameters (PyTorch's `sum(p.numel() for p in model.parameters())`).
            pub const PARAM_COUNT: usize = #params;
            /// The spec this model was generated from.
            pub const SOURCE: &'static str = #source;
            /// The spec's model name.
            pub const NAME: &'static str = #model_name;
        }
    }

    fn new_fn(&self) -> Result<TokenStream, Error> {
        let layers = self.rt(quote!(layers));
        let config = self.rt(quote!(config));
        let built = self.private(quote!(expect_built));
        let pool_config = |a: &cnnc_core::Pool2dConfig| {
            let (k, s, p, ceil, d, count) = (
                pair(a.kernel_size),
                pair(a.stride),
                pair(a.padding),
                a.ceil_mode,
                pair(a.dilation),
                a.count_include_pad,
            );
            let divisor = match a.divisor_override {
                Some(v) => {
                    let v = lit(v);
                    quote!(::core::option::Option::Some(#v))
                }
                None => quote!(::core::option::Option::None),
            };
            quote!(&#config::Pool2dConfig {
                kernel_size: #k, stride: #s, padding: #p, ceil_mode: #ceil, dilation: #d,
                count_include_pad: #count, divisor_override: #divisor
            })
        };
        let config_path = config.to_string();
        let mut lets = Vec::new();
        for plan in self.layers {
            let l = plan.layer;
            let field = &plan.field;
            let name = l.name();
            let input = self.shape_value(l.input_shape());
            let ty = format_ident!("{}", l.kind().layer_type());
            let config: syn::Expr = syn::parse_str(&l.config().rust_expr(&config_path))
                .map_err(|e| Error::Unparsable(format!("the config of `{name}`: {e}")))?;
            let index = lit(plan.index);
            let expr = if l.kind().is_merge() {
                self.merge_layer(l)?
            } else {
                quote!(#built(#layers::#ty::from_config(#name, &#config, #input, #index, &mut init)))
            };
            // What the plan has this layer apply or mask, as the executor does.
            let step = self.exec.step_of(plan.index);
            let mut calls = Vec::new();
            if step.layer == plan.index {
                if step.fusion != Fusion::None {
                    calls.push(quote!(#field.fuse_relu();));
                }
                if step.fusion == Fusion::ReluMaxPool {
                    let LayerConfig::MaxPool2d(a) = self.model.layers()[step.last].config() else {
                        return Err(inconsistent(l, "a fused pool is a max pool"));
                    };
                    let pool = pool_config(a);
                    calls.push(quote!(#field.fuse_max_pool(#pool);));
                }
                if step.relu_grad_masked {
                    calls.push(quote!(#field.relu_grad_masked();));
                }
                if step.masks_relu_grad {
                    calls.push(quote!(#field.mask_relu_grad();));
                }
            }
            lets.push(if calls.is_empty() {
                quote!(let #field = #expr;)
            } else {
                quote!(let mut #field = #expr; #(#calls)*)
            });
        }
        let workspace = self.private(quote!(Workspace));
        let lens = self.exec.buffers().iter().map(|shape| lit(shape.numel()));
        let fields = self.layers.iter().map(|p| &p.field);
        Ok(quote! {
            /// Builds the model with PyTorch's default initialisation, drawn from `seed` in layer
            /// order exactly as the dynamic executor (`cnnc::runtime::Network::new`) draws it, so
            /// both give identical weights for the same seed.
            pub fn new(seed: u64) -> Self {
                use #layers::FromConfig;
                let mut init = #layers::Init::new(seed);
                #(#lets)*
                Self {
                    #(#fields,)*
                    workspace: #workspace::new([#(#lens),*]),
                }
            }
        })
    }

    fn methods(&self) -> TokenStream {
        let krate = self.krate();
        let error = quote!(#krate::Error);
        let input = match self.model.input_shape() {
            Shape::Chw([c, h, w]) => {
                let [c, h, w] = [c, h, w].map(lit);
                quote!(#c, #h, #w)
            }
            Shape::Flat(n) => {
                let n = lit(n);
                quote!(#n, 1, 1)
            }
        };
        let images = self.typed(quote!(Images));
        let features = self.typed(quote!(Features));
        let tape = self.typed(quote!(Tape));
        let mode = self.rt(quote!(Mode));
        let outputs = lit(self.model.output_shape().numel());
        let weights = self.rt(quote!(weights));
        let ndarray = quote!(#krate::ndarray);
        let private_infer = self.private(quote!(infer));
        let typed_infer = self.typed(quote!(infer));
        quote! {
            /// Inference: the logits `[N, OUTPUT_SIZE]` of a batch, as a view into the model's
            /// own buffer (dropout off, batch norm on its running statistics).
            pub fn forward<S: AsRef<[f32]>>(
                &mut self,
                x: &#images<#input, S>,
            ) -> Result<#features<#outputs, &[f32]>, #error> {
                let batch = x.batch();
                self.workspace.load_input(x.as_slice(), batch)?;
                self.run_forward(batch, #mode::Eval)?;
                let _ = self.workspace.finish_forward(batch, #mode::Eval);
                self.workspace.outputs(batch)
            }

            /// Training forward: the logits of a batch and the tape that [`Self::backward`]
            /// needs. The model keeps every activation until the next forward.
            pub fn forward_train<S: AsRef<[f32]>>(
                &mut self,
                x: &#images<#input, S>,
            ) -> Result<(#features<#outputs, &[f32]>, #tape), #error> {
                let batch = x.batch();
                self.workspace.load_input(x.as_slice(), batch)?;
                self.run_forward(batch, #mode::Train)?;
                let tape = self.workspace.finish_forward(batch, #mode::Train);
                Ok((self.workspace.outputs(batch)?, tape))
            }

            /// Backpropagates `dlogits` (the gradient of the loss with respect to the logits of the
            /// training forward that returned `tape`) and overwrites every parameter's gradient.
            pub fn backward<S: AsRef<[f32]>>(
                &mut self,
                tape: #tape,
                dlogits: &#features<#outputs, S>,
            ) -> Result<(), #error> {
                let batch = self.workspace.check_tape(&tape)?;
                self.workspace.load_dlogits::<#outputs>(dlogits.as_slice(), batch)?;
                self.run_backward(batch)
            }

            /// One training step's computation: training forward, softmax cross-entropy (mean)
            /// against `labels` (one class index per sample), backward. Leaves the gradients for an
            /// optimizer and returns the loss. Allocates nothing once the buffers hold the batch.
            pub fn train_step<S: AsRef<[f32]>>(
                &mut self,
                x: &#images<#input, S>,
                labels: &[usize],
            ) -> Result<f32, #error> {
                let batch = x.batch();
                self.workspace.load_input(x.as_slice(), batch)?;
                self.run_forward(batch, #mode::Train)?;
                let _ = self.workspace.finish_forward(batch, #mode::Train);
                let loss = self.workspace.cross_entropy::<#outputs>(labels, batch)?;
                self.run_backward(batch)?;
                Ok(loss)
            }

            /// Inference on a PyTorch-layout batch `[N, C, H, W]` from `&self` (dropout off,
            /// batch norm on its running statistics): checks its dims and values once and
            /// returns the logits `[N, OUTPUT_SIZE]`. Several threads may call it at once (an
            /// `Arc` of the model); each works in scratch memory of its own.
            pub fn predict(
                &self,
                x: #ndarray::ArrayView4<f32>,
            ) -> Result<#ndarray::Array2<f32>, #error> {
                #private_infer(self, Self::INPUT_SHAPE, x)
            }

            /// Typed inference from `&self`: the logits of a batch as owned features, the same
            /// values as [`Self::forward`]. Several threads may call it at once.
            pub fn infer<S: AsRef<[f32]>>(
                &self,
                x: &#images<#input, S>,
            ) -> Result<#features<#outputs>, #error> {
                #typed_infer(self, x)
            }

            /// Saves the parameters and buffers as safetensors under their PyTorch state_dict
            /// names (atomically), with the model's name as metadata.
            pub fn save(
                &self,
                path: impl AsRef<::std::path::Path>,
            ) -> Result<(), #weights::SaveError> {
                let metadata = ::std::collections::BTreeMap::from([
                    ("model".to_owned(), Self::NAME.to_owned()),
                ]);
                #weights::save_ref(self, path.as_ref(), &metadata)
            }

            /// Loads parameters and buffers from a safetensors file, strictly (every missing,
            /// unexpected or misshapen tensor is reported; the model is untouched on error).
            /// Returns the file's metadata.
            pub fn load(
                &mut self,
                path: impl AsRef<::std::path::Path>,
            ) -> Result<::std::collections::BTreeMap<String, String>, #weights::LoadError> {
                #weights::load(self, path.as_ref())
            }
        }
    }

    /// `rng_states` and `restore_rng_states`, as on the dynamic executor's `Network`: both hand
    /// every layer field to the runtime's shared functions, which pick the layers with a random
    /// stream, so the generator knows nothing of which layers draw random numbers.
    fn rng_methods(&self) -> TokenStream {
        let krate = self.krate();
        let layers = self.rt(quote!(layers));
        let layer = self.rt(quote!(Layer));
        let n = lit(self.layers.len());
        let fields: Vec<&Ident> = self.layers.iter().map(|p| &p.field).collect();
        quote! {
            /// Where every dropout layer's random stream stands, by layer name: with
            /// [`Self::restore_rng_states`], what lets a checkpoint of a model with dropout
            /// continue bit-identically. Empty for a model without dropout.
            pub fn rng_states(&self) -> Vec<(String, u128)> {
                let layers: [&dyn #layer; #n] = [#(&self.#fields),*];
                #layers::rng_states(layers)
            }

            /// Moves every dropout layer's random stream to the position [`Self::rng_states`]
            /// gave for it in a model built from the same spec and seed. Errors on names that are
            /// not dropout layers of this model and on dropout layers `states` leaves out, before
            /// moving any stream.
            pub fn restore_rng_states(
                &mut self,
                states: &[(String, u128)],
            ) -> Result<(), #krate::Error> {
                let layers: [&mut dyn #layer; #n] = [#(&mut self.#fields),*];
                #layers::restore_rng_states(layers, states)
            }
        }
    }

    fn run_forward(&self) -> TokenStream {
        let krate = self.krate();
        let error = quote!(#krate::Error);
        let mode = self.rt(quote!(Mode));
        let private = self.private(TokenStream::new());
        let use_views = self.use_views();
        let acts = self.acts_pattern();
        let first = Self::view_type(self.model.input_shape());
        let a0 = &acts[0];
        let mut steps = Vec::new();
        for plan in self.layers {
            let step = self.exec.step_of(plan.index);
            let ty = Self::view_type(self.exec.buffers()[step.output]);
            let field = &plan.field;
            let binding = if plan.index + 1 == self.layers.len() {
                quote!(_)
            } else {
                quote!(x)
            };
            steps.push(if plan.fused {
                let before = self.layers[step.layer].layer.name();
                let mark = self.mark(format!("{}, fused into {before}", plan.summary(self.model)));
                quote! {
                    #mark
                    let #binding: #ty = x;
                }
            } else {
                let mark = self.mark(plan.summary(self.model));
                let out = &acts[step.output];
                quote! {
                    #mark
                    let #binding: #ty = forward(&mut self.#field, x, #out, mode)?;
                }
            });
        }
        quote! {
            /// Runs every layer on the `batch` samples in the input buffer; each activation's type
            /// carries its shape.
            fn run_forward(&mut self, batch: usize, mode: #mode) -> Result<(), #error> {
                use #private{forward, on_pool};
                #use_views
                on_pool(|| {
                    let [#(#acts),*] = &mut self.workspace.acts;
                    let x = <#first>::view_nhwc(#a0, batch)?;
                    #(#steps)*
                    Ok(())
                })
            }
        }
    }

    fn run_backward(&self) -> TokenStream {
        let krate = self.krate();
        let error = quote!(#krate::Error);
        let private = self.private(TokenStream::new());
        let use_views = self.use_views();
        let acts = self.acts_pattern();
        let grads = [format_ident!("g0"), format_ident!("g1")];
        let mut used = [false; 2];
        let mut steps = Vec::new();
        let mut calls = BTreeSet::from(["on_pool"]);
        // The convolution step whose backward a batch norm's joined with its own.
        let mut done = None;
        // The plan's steps from the logits back, each reading its output gradient where the
        // step after it wrote its input gradient.
        for (k, step) in self.exec.steps().iter().enumerate().rev() {
            if done == Some(k) {
                continue;
            }
            if let (Some(join), Some(conv)) = (step.join.norm_grad, k.checked_sub(1)) {
                let mut grad = |b: usize| {
                    if let Some(u) = used.get_mut(b) {
                        *u = true;
                    }
                    format_ident!("g{}", b)
                };
                steps.extend(self.norm_conv_backward(step, conv, join, &mut grad, &mut calls));
                done = Some(conv);
                continue;
            }
            let plan = &self.layers[step.layer];
            let mark = self.mark(format!("backward {}", plan.summary(self.model)));
            let (tx, ty) = (
                Self::view_type(plan.layer.input_shape()),
                Self::view_type(self.exec.buffers()[step.output]),
            );
            let (x, y) = (&acts[step.input], &acts[step.output]);
            let dy = match step.dy {
                Grad::Logits => quote!(&ws.dlogits),
                Grad::Buffer(b) => {
                    used[b] = true;
                    let g = &grads[b];
                    quote!(#g)
                }
                // Every step of a chain reaches the logits.
                Grad::Unused => continue,
            };
            let dx = match step.dx {
                None => quote!(None),
                Some(b) => {
                    used[b] = true;
                    let g = &grads[b];
                    quote!(Some(&mut #g[..]))
                }
            };
            let field = &plan.field;
            calls.insert("backward");
            steps.push(quote! {
                #mark
                backward::<#tx, #ty>(&mut self.#field, #x, #y, #dy, #dx, batch)?;
            });
        }
        let grads_binding = match used {
            [false, false] => TokenStream::new(),
            _ => {
                let names = (0..2).map(|i| {
                    if used[i] {
                        grads[i].clone()
                    } else {
                        format_ident!("_")
                    }
                });
                quote!(let [#(#names),*] = &mut ws.grads;)
            }
        };
        let calls = calls.into_iter().map(|call| format_ident!("{}", call));
        quote! {
            /// Backpropagates the gradient in the logits' gradient buffer through every layer, from
            /// the last to the first.
            fn run_backward(&mut self, batch: usize) -> Result<(), #error> {
                use #private{#(#calls),*};
                #use_views
                on_pool(|| {
                    let ws = &mut self.workspace;
                    let [#(#acts),*] = &ws.acts;
                    #grads_binding
                    #(#steps)*
                    Ok(())
                })
            }
        }
    }

    /// The names that `let [a0, a1, ...] = acts` binds: one per buffer of the plan.
    pub(crate) fn acts_pattern(&self) -> Vec<Ident> {
        (0..self.exec.buffers().len())
            .map(|i| format_ident!("a{}", i))
            .collect()
    }

    fn visit_impl(&self) -> TokenStream {
        let name = &self.options.name;
        let visit = self.rt(quote!(Visit));
        let entry = self.rt(quote!(Entry));
        let layer = self.rt(quote!(Layer));
        let calls: Vec<TokenStream> = self
            .layers
            .iter()
            .filter(|p| p.has_tensors())
            .map(|p| {
                let field = &p.field;
                quote!(#layer::visit(&mut self.#field, f);)
            })
            .collect();
        let body = if calls.is_empty() {
            quote!(let _ = f;)
        } else {
            quote!(#(#calls)*)
        };
        let entry_ref = self.rt(quote!(EntryRef));
        let visit_ref = self.rt(quote!(VisitRef));
        quote! {
            impl #visit for #name {
                /// Visits parameters and buffers in layer order under their PyTorch state_dict
                /// names (`layer1.0.weight`, ...), as the optimizers and weights I/O expect.
                fn visit(&mut self, f: &mut dyn FnMut(#entry<'_>)) {
                    #body
                }

                /// Reads through `VisitRef`: nothing is repacked.
                fn visit_read(&mut self, f: &mut dyn FnMut(#entry_ref<'_>)) {
                    #visit_ref::visit_ref(self, f);
                }
            }
        }
    }
}

impl Gen<'_> {
    /// The `VisitRef`, plan and `Model` impls: read-only parameter visiting, the plan's steps as
    /// a table for the runtime's `&self` runner, and the trait over the inherent methods.
    fn model_impls(&self) -> TokenStream {
        let name = &self.options.name;
        let krate = self.krate();
        let error = quote!(#krate::Error);
        let visit_ref = self.rt(quote!(VisitRef));
        let entry_ref = self.rt(quote!(EntryRef));
        let layer = self.rt(quote!(Layer));
        let planned = self.private(quote!(Planned));
        let step_ref = self.private(quote!(StepRef));
        let shape = self.rt(quote!(Shape));
        let weights = self.rt(quote!(weights));
        let model_trait = quote!(#krate::Model);
        let ndarray = quote!(#krate::ndarray);
        let calls: Vec<TokenStream> = self
            .layers
            .iter()
            .filter(|p| p.has_tensors())
            .map(|p| {
                let field = &p.field;
                quote!(#layer::visit_ref(&self.#field, f);)
            })
            .collect();
        let body = if calls.is_empty() {
            quote!(let _ = f;)
        } else {
            quote!(#(#calls)*)
        };
        let arms = self.layers.iter().map(|p| {
            let (index, field) = (lit(p.index), &p.field);
            quote!(#index => ::core::option::Option::Some(&self.#field),)
        });
        let epilogue_ty = self.rt(quote!(model::Epilogue));
        let clamp_ty = self.rt(quote!(model::Clamp));
        let step_refs = |steps: &[cnnc_core::Step]| -> Vec<TokenStream> {
            steps
                .iter()
                .map(|step| {
                    let (layer, last, output) =
                        (lit(step.layer), lit(step.last), lit(step.output));
                    let inputs = step.inputs.iter().map(|&b| lit(b));
                    let e = step.epilogue;
                    let epilogue = if e.is_none() {
                        quote!(#epilogue_ty::NONE)
                    } else {
                        let option = |v: Option<usize>| match v {
                            Some(v) => {
                                let v = lit(v);
                                quote!(::core::option::Option::Some(#v))
                            }
                            None => quote!(::core::option::Option::None),
                        };
                        let (norm, residual) = (option(e.norm), option(e.residual));
                        let clamp = match e.clamp {
                            Clamp::None => quote!(None),
                            Clamp::Relu => quote!(Relu),
                            Clamp::Relu6 => quote!(Relu6),
                        };
                        let slice = match e.slice {
                            Some(Slice { offset, channels }) => {
                                let (offset, channels) = (lit(offset), lit(channels));
                                let slice_ty = self.rt(quote!(model::Slice));
                                quote!(::core::option::Option::Some(#slice_ty { offset: #offset, channels: #channels }))
                            }
                            None => quote!(::core::option::Option::None),
                        };
                        quote!(#epilogue_ty {
                            norm: #norm,
                            residual: #residual,
                            clamp: #clamp_ty::#clamp,
                            slice: #slice,
                        })
                    };
                    quote!(#step_ref {
                        layer: #layer,
                        last: #last,
                        inputs: &[#(#inputs),*],
                        output: #output,
                        epilogue: #epilogue,
                    })
                })
                .collect()
        };
        let steps = step_refs(self.exec.steps());
        let eval_steps = step_refs(self.exec.eval_steps());
        let n_eval_steps = lit(self.exec.eval_steps().len());
        // Inference steps of their own only where they differ (the trait's default reads the
        // steps).
        let eval_fns = (eval_steps.len() != steps.len()
            || eval_steps
                .iter()
                .zip(&steps)
                .any(|(e, s)| e.to_string() != s.to_string()))
        .then(|| {
            quote! {
                fn eval_step_count(&self) -> usize {
                    #n_eval_steps
                }

                fn eval_step(&self, index: usize) -> #step_ref<'_> {
                    const STEPS: [#step_ref<'static>; #n_eval_steps] = [#(#eval_steps),*];
                    STEPS[index]
                }
            }
        });
        let buffers = self.exec.buffers().iter().map(|&b| self.shape_value(b));
        let (n_layers, n_steps, n_buffers) = (
            lit(self.layers.len()),
            lit(self.exec.steps().len()),
            lit(self.exec.buffers().len()),
        );
        let output = lit(self.exec.output());
        let path = quote!(&::std::path::Path);
        let map = quote!(::std::collections::BTreeMap);
        let check_input = self.typed(quote!(check_input));
        let features = self.typed(quote!(Features));
        let mode = self.rt(quote!(Mode));
        let outputs = lit(self.model.output_shape().numel());
        quote! {
            impl #visit_ref for #name {
                /// Visits parameters and buffers read-only, in the order and under the names of
                /// `Visit`.
                fn visit_ref(&self, f: &mut dyn FnMut(#entry_ref<'_>)) {
                    #body
                }
            }

            impl #planned for #name {
                fn layer(&self, index: usize) -> ::core::option::Option<&dyn #layer> {
                    match index {
                        #(#arms)*
                        _ => ::core::option::Option::None,
                    }
                }

                fn layer_count(&self) -> usize {
                    #n_layers
                }

                fn step_count(&self) -> usize {
                    #n_steps
                }

                fn step(&self, index: usize) -> #step_ref<'_> {
                    const STEPS: [#step_ref<'static>; #n_steps] = [#(#steps),*];
                    STEPS[index]
                }

                #eval_fns

                fn buffer(&self, index: usize) -> #shape {
                    const BUFFERS: [#shape; #n_buffers] = [#(#buffers),*];
                    BUFFERS[index]
                }

                fn buffer_count(&self) -> usize {
                    #n_buffers
                }

                fn output_buffer(&self) -> usize {
                    #output
                }
            }

            impl #model_trait for #name {
                fn predict(
                    &self,
                    x: #ndarray::ArrayView4<f32>,
                ) -> Result<#ndarray::Array2<f32>, #error> {
                    #name::predict(self, x)
                }

                fn input_shape(&self) -> [usize; 3] {
                    Self::INPUT_SHAPE
                }

                fn output_size(&self) -> usize {
                    Self::OUTPUT_SIZE
                }

                fn name(&self) -> &str {
                    Self::NAME
                }

                fn param_count(&self) -> usize {
                    Self::PARAM_COUNT
                }

                fn forward_train(
                    &mut self,
                    x: #ndarray::ArrayView4<f32>,
                ) -> Result<#ndarray::Array2<f32>, #error> {
                    #check_input(&x, Self::INPUT_SHAPE)?;
                    let batch = x.dim().0;
                    self.workspace.load_nchw(x)?;
                    self.run_forward(batch, #mode::Train)?;
                    let _ = self.workspace.finish_forward(batch, #mode::Train);
                    Ok(self.workspace.outputs::<#outputs>(batch)?.to_array())
                }

                fn backward(
                    &mut self,
                    dlogits: #ndarray::ArrayView2<f32>,
                ) -> Result<(), #error> {
                    let tape = self.workspace.last_training_tape()?;
                    let dlogits = #features::<#outputs>::from_array(dlogits)?;
                    #name::backward(self, tape, &dlogits)
                }

                fn train_step(
                    &mut self,
                    x: #ndarray::ArrayView4<f32>,
                    labels: &[usize],
                ) -> Result<f32, #error> {
                    #check_input(&x, Self::INPUT_SHAPE)?;
                    let batch = x.dim().0;
                    self.workspace.load_nchw(x)?;
                    self.run_forward(batch, #mode::Train)?;
                    let _ = self.workspace.finish_forward(batch, #mode::Train);
                    let loss = self.workspace.cross_entropy::<#outputs>(labels, batch)?;
                    self.run_backward(batch)?;
                    Ok(loss)
                }

                fn activations(
                    &self,
                    x: #ndarray::ArrayView4<f32>,
                    names: &[&str],
                ) -> Result<#map<String, #ndarray::ArrayD<f32>>, #error> {
                    #krate::__private::activations(self, Self::INPUT_SHAPE, x, names)
                }

                fn save(&self, path: #path) -> Result<(), #weights::SaveError> {
                    #name::save(self, path)
                }

                fn load(
                    &mut self,
                    path: #path,
                ) -> Result<#map<String, String>, #weights::LoadError> {
                    #name::load(self, path)
                }

                fn rng_states(&self) -> Vec<(String, u128)> {
                    #name::rng_states(self)
                }

                fn restore_rng_states(
                    &mut self,
                    states: &[(String, u128)],
                ) -> Result<(), #error> {
                    #name::restore_rng_states(self, states)
                }
            }
        }
    }
}

pub(crate) fn inconsistent(layer: &CheckedLayer, message: impl Into<String>) -> Error {
    Error::Inconsistent {
        layer: layer.name().to_owned(),
        message: message.into(),
    }
}

/// Used by the unit tests of this crate: the seed model, checked.
#[cfg(test)]
pub(crate) fn checked(text: &str) -> cnnc_spec::CheckedModel {
    let source = cnnc_spec::Source::new("test.cnn", text, cnnc_spec::Format::Dsl);
    match cnnc_spec::compile(&source) {
        Ok((model, _)) => model,
        Err(diagnostics) => panic!("{diagnostics:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options::new(format_ident!("Tiny"), "tiny.cnn")
    }

    #[test]
    fn rejects_models_ending_in_an_image() {
        let model = checked("input (1, 8, 8)\nconv2d(out_channels=2, kernel_size=3)\n");
        let err = generate(&model, &options()).unwrap_err();
        assert!(matches!(err, Error::ImageOutput { .. }), "{err}");
    }

    #[test]
    fn graph_models_bind_one_typed_tensor_per_step() {
        let model = checked(include_str!("../../tests/generated/graph_mix.cnn"));
        let code = crate::to_source(&model, &options()).unwrap();
        // Every step's output is its own binding, typed by its shape; a tensor read again later
        // is lent as a view, and given away at its last read. The batch norm applies `act`, the
        // add `res_act`.
        let lines = [
            "let x2: Images<8, 8, 8, &[f32]> = forward(&mut self.bn, x1, a2, mode)?;",
            "// act: relu [8, 8, 8] -> [8, 8, 8], fused into bn",
            "let x4: Images<8, 8, 8, &[f32]> = add(&mut self.res, [x3, x2.view()], a4)?;",
            "// res_act: relu [8, 8, 8] -> [8, 8, 8], fused into res",
            "let x5: Images<4, 8, 8, &[f32]> = forward(&mut self.branch, x2, a5, mode)?;",
            "[x4.any_channels(), x5.any_channels()],",
            "[x10.expand_hw::<8, 8>(), x6.as_broadcast()],",
            "let _: Features<5, &[f32]> = forward(&mut self.fc, x14, a15, mode)?;",
            "// branch_act: relu [4, 8, 8] -> [4, 8, 8], fused into branch",
            "workspace: ::cnnc::__private::Workspace<16, 3>,",
        ];
        for line in lines {
            assert!(code.contains(line), "`{line}` missing from:\n{code}");
        }
        // `act` feeds conv_a, res and branch: branch writes its gradient, res adds its part in
        // place (masked by its ReLU's output, `a4`), conv_a's goes through a scratch buffer and
        // is added after (the plan's order). The batch norm's input gradient is computed by the
        // stem's backward (the plan joins them), which has no input gradient of its own.
        let backward = &code[code.find("fn run_backward").unwrap()..];
        let order = [
            "(&mut self.branch, a2, a5, g1, Some(&mut g0[..]), batch)?;",
            "(&mut self.res, [a3, a2], [a4, g2], 1, GradOut::Add(&mut g0[..]), batch)?;",
            "(&mut self.conv_a, a2, a3, g1, Some(&mut g2[..]), batch)?;",
            "accumulate::<Images<8, 8, 8, &[f32]>>(&mut g0[..], g2, batch)?;",
            "(&mut self.bn, &mut self.stem, [a0, a1], a2, g0, None, batch)?;",
        ];
        let at: Vec<usize> = order
            .iter()
            .map(|line| match backward.find(line) {
                Some(at) => at,
                None => panic!("`{line}` missing from:\n{backward}"),
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{backward}");
    }

    #[test]
    fn a_resnet_runs_the_joins_the_plan_records() {
        let model = checked(include_str!("../../models/resnet20_cifar.cnn"));
        let plan = ExecPlan::new(&model);
        let code = crate::to_source(&model, &options()).unwrap();
        let count = |what: &str| code.matches(what).count();
        let joins =
            |f: fn(&cnnc_core::Join) -> bool| plan.steps().iter().filter(|s| f(&s.join)).count();
        // Each block's last batch norm (and each projection's) stores the add and its ReLU.
        assert_eq!(count("= norm_add("), joins(|j| j.add.is_some()));
        assert_eq!(count("= norm_add("), 9);
        assert!(code.contains("// layer1.0.5: add(layer1.0.bn2, relu) [16, 32, 32], [16, 32, 32] -> [16, 32, 32], stored by layer1.0.bn2"));
        // Every batch norm's input gradient is computed by the convolution before it, the
        // buffers trading places where the plan says.
        assert_eq!(
            count("norm_conv_backward::<"),
            joins(|j| j.norm_grad.is_some())
        );
        assert_eq!(count("norm_conv_backward::<"), 21);
        let swaps = joins(|j| j.norm_grad.is_some_and(|n| n.swap.is_some()));
        assert_eq!(count("::core::mem::swap("), swaps);
        assert!(swaps > 0);
        // An add writes its shared gradient once: one call per add, not one per input.
        assert_eq!(joins(|j| j.same_grad.is_some()), 9);
        assert_eq!(count("merge_backward::<"), 9);
    }

    #[test]
    fn a_branch_that_reaches_no_output_zeroes_its_gradients() {
        let model = checked(
            "input (1, 6, 6)\na: conv2d(out_channels=2, kernel_size=3)\n\
             side: conv2d(out_channels=2, kernel_size=1)\nflatten(a)\nhead: linear(out_features=3)\n",
        );
        let code = crate::to_source(&model, &options()).unwrap();
        assert!(code.contains("zero_grads(&mut self.side);"), "{code}");
        assert!(!code.contains("backward::<Images<2, 4, 4, &[f32]>, Images<2, 4, 4, &[f32]>>"));
    }

    #[test]
    fn sequential_models_keep_the_chain() {
        let seed = checked(include_str!("../../models/custom_cnn.cnn"));
        let code = crate::to_source(&seed, &options()).unwrap();
        assert!(
            code.contains("let x: Images<32, 16, 16, &[f32]> = forward("),
            "{code}"
        );
        assert!(code.contains("Workspace<8>,"), "{code}");
        assert!(!code.contains("merge_backward") && !code.contains("let x1"));
        // Nothing folds in inference: the trait's default reads the steps.
        assert!(!code.contains("fn eval_step"), "{code}");
    }

    #[test]
    fn models_implement_the_trait_over_a_table_of_their_plan() {
        let model = checked(include_str!("../../tests/generated/graph_mix.cnn"));
        let code = crate::to_source(&model, &options()).unwrap();
        for line in [
            "#[derive(Clone, Debug)]",
            "impl ::cnnc::runtime::VisitRef for Tiny {",
            "impl ::cnnc::__private::Planned for Tiny {",
            "impl ::cnnc::Model for Tiny {",
            "::cnnc::__private::infer(self, Self::INPUT_SHAPE, x)",
            "::cnnc::__private::activations(self, Self::INPUT_SHAPE, x, names)",
            "::cnnc::runtime::weights::save_ref(self, path.as_ref(), &metadata)",
        ] {
            assert!(code.contains(line), "`{line}` missing from:\n{code}");
        }
        // One table entry per step and per inference step (this plan's differ), a merge
        // listing every input it reads.
        let plan = ExecPlan::new(&model);
        assert_eq!(
            code.matches("::cnnc::__private::StepRef {").count(),
            plan.steps().len() + plan.eval_steps().len()
        );
        let merge = plan.steps().iter().find(|s| s.inputs.len() > 1).unwrap();
        let inputs: Vec<String> = merge.inputs.iter().map(usize::to_string).collect();
        assert!(
            code.contains(&format!("inputs: &[{}]", inputs.join(", "))),
            "{code}"
        );
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(145_578), "145,578");
        assert_eq!(thousands(12), "12");
    }
}
