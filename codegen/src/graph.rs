//! The forward and backward passes of a graph model (a layer reading other layers than the one
//! before it, or several): one typed binding per tensor, so that a merge of mismatched shapes
//! cannot compile, and backward exactly as the plan orders it, the gradient parts of a tensor
//! read by several layers summed in the plan's fixed order. Sequential models keep the chain of
//! [`Gen::run_forward`] and [`Gen::run_backward`].

use std::collections::BTreeSet;

use cnnc_core::{CheckedLayer, Grad, GradTo, JoinedNormGrad, LayerConfig, Shape, Step};
use proc_macro2::{Ident, Literal, TokenStream};
use quote::{format_ident, quote};

use crate::error::Error;
use crate::model::{Gen, Plan, lit};

/// The binding of the tensor in activation buffer `buffer` (`x0` is the model's input).
fn tensor(buffer: usize) -> Ident {
    format_ident!("x{}", buffer)
}

/// The binding of gradient buffer `buffer`.
fn grad(buffer: usize) -> Ident {
    format_ident!("g{}", buffer)
}

/// How generated code reads a tensor in forward: by value at its last read, as a borrowed view
/// before that.
struct Reads {
    left: Vec<usize>,
}

impl Reads {
    fn of(steps: &[Step], buffers: usize) -> Reads {
        let mut left = vec![0; buffers];
        let mut k = 0;
        while k < steps.len() {
            let step = &steps[k];
            k += 1;
            let Some(add) = step.join.add else {
                for &input in &step.inputs {
                    left[input] += 1;
                }
                continue;
            };
            // A batch norm that stores the add after it reads its input and the add's other
            // input; the add's step does not run forward.
            left[step.input] += 1;
            left[add.residual] += 1;
            k += 1;
        }
        Reads { left }
    }

    fn is_read(&self, buffer: usize) -> bool {
        self.left[buffer] > 0
    }

    fn take(&mut self, buffer: usize) -> TokenStream {
        let x = tensor(buffer);
        self.left[buffer] = self.left[buffer].saturating_sub(1);
        if self.left[buffer] == 0 {
            quote!(#x)
        } else {
            quote!(#x.view())
        }
    }
}

impl Gen<'_> {
    /// The constructor call of merge layer `layer`, which takes every input's shape (a merge
    /// has no parameters, so it draws nothing from the initialiser).
    pub(crate) fn merge_layer(&self, layer: &CheckedLayer) -> Result<TokenStream, Error> {
        let layers = self.rt(quote!(layers));
        let built = self.private(quote!(expect_built));
        let name = layer.name();
        let shapes = layer.input_shapes().iter().map(|&s| self.shape_value(s));
        let shapes = quote!(&[#(#shapes),*]);
        let new = match layer.config() {
            LayerConfig::Add => quote!(#layers::Add::new(#name, #shapes)),
            LayerConfig::Concat(c) => {
                let config = self.rt(quote!(config));
                let dim = Literal::i64_unsuffixed(c.dim);
                quote!(#layers::Concat::new(#name, &#config::ConcatConfig { dim: #dim }, #shapes))
            }
            LayerConfig::Mul => quote!(#layers::Mul::new(#name, #shapes)),
            other => {
                return Err(crate::model::inconsistent(
                    layer,
                    format!("{} is not a merge kind", other.kind().keyword()),
                ));
            }
        };
        Ok(quote!(#built(#new)))
    }

    /// The plan's steps in forward order, each binding its output's typed view; a merge takes
    /// its inputs as an array, whose one element type is what makes mismatched shapes a
    /// compile error.
    pub(crate) fn graph_forward(&self) -> TokenStream {
        let krate = self.krate();
        let error = quote!(#krate::Error);
        let mode = self.rt(quote!(Mode));
        let private = self.private(TokenStream::new());
        let use_views = self.use_views();
        let acts = self.acts_pattern();
        let buffers = self.exec.buffers();
        let first = Self::view_type(self.model.input_shape());
        let a0 = &acts[0];
        let mut reads = Reads::of(self.exec.steps(), buffers.len());
        let x0 = tensor(0);
        let mut lines = vec![quote!(let #x0 = <#first>::view_nhwc(#a0, batch)?;)];
        // The helpers the steps call, imported by name (an unused import would warn in the
        // user's crate).
        let mut calls = BTreeSet::from(["on_pool"]);
        // The add a batch norm stored ([`cnnc_core::Join::add`]): its layer and the batch norm's.
        let mut joined: Option<(usize, &str)> = None;
        for plan in self.layers {
            let step = self.exec.step_of(plan.index);
            if plan.fused {
                let before = self.layers[step.layer].layer.name();
                lines.push(self.mark(format!("{}, fused into {before}", plan.summary(self.model))));
                continue;
            }
            if let Some((_, norm)) = joined.filter(|&(add, _)| add == plan.index) {
                let summary = plan.summary(self.model);
                lines.push(self.mark(format!("{summary}, stored by {norm}")));
                continue;
            }
            if let Some(add) = step.join.add {
                let Some(add_step) = self.exec.steps().iter().find(|s| s.output == add.output)
                else {
                    continue;
                };
                let name = plan.layer.name();
                joined = Some((add_step.layer, name));
                let add_plan = &self.layers[add_step.layer];
                let mark = self.mark(format!(
                    "{} and {}",
                    plan.summary(self.model),
                    add_plan.summary(self.model)
                ));
                let ty = Self::view_type(buffers[add.output]);
                let binding = if reads.is_read(add.output) {
                    let x = tensor(add.output);
                    quote!(#x)
                } else {
                    quote!(_)
                };
                let (x, r) = (reads.take(step.input), reads.take(add.residual));
                let (out, field, relu) = (&acts[add.output], &plan.field, add.relu);
                calls.insert("norm_add");
                lines.push(quote! {
                    #mark
                    let #binding: #ty = norm_add(&mut self.#field, [#x, #r], #out, mode, #relu)?;
                });
                continue;
            }
            let mark = self.mark(plan.summary(self.model));
            let ty = Self::view_type(buffers[step.output]);
            let binding = if reads.is_read(step.output) {
                let x = tensor(step.output);
                quote!(#x)
            } else {
                quote!(_)
            };
            let out = &acts[step.output];
            let field = &plan.field;
            calls.insert(match plan.layer.config() {
                LayerConfig::Add => "add",
                LayerConfig::Concat(_) => "concat",
                LayerConfig::Mul => "mul",
                _ => "forward",
            });
            let call = match plan.layer.config() {
                LayerConfig::Add => {
                    let xs = step.inputs.iter().map(|&b| reads.take(b));
                    quote!(add(&mut self.#field, [#(#xs),*], #out)?)
                }
                LayerConfig::Concat(_) => {
                    let xs = step
                        .inputs
                        .iter()
                        .map(|&b| {
                            let x = reads.take(b);
                            quote!(#x.any_channels())
                        })
                        .collect::<Vec<_>>();
                    quote!(concat(&mut self.#field, [#(#xs),*], #out)?)
                }
                LayerConfig::Mul => {
                    let target = buffers[step.output];
                    let xs = step
                        .inputs
                        .iter()
                        .zip(plan.layer.input_shapes())
                        .map(|(&b, &shape)| {
                            let x = reads.take(b);
                            broadcast(x, shape, target)
                        })
                        .collect::<Vec<_>>();
                    quote!(mul(&mut self.#field, [#(#xs),*], #out)?)
                }
                _ => {
                    let x = reads.take(step.input);
                    quote!(forward(&mut self.#field, #x, #out, mode)?)
                }
            };
            lines.push(quote! {
                #mark
                let #binding: #ty = #call;
            });
        }
        let calls = calls.into_iter().map(|call| format_ident!("{}", call));
        quote! {
            /// Runs every step of the plan on the `batch` samples in the input buffer; each
            /// tensor is a binding whose type carries its shape.
            fn run_forward(&mut self, batch: usize, mode: #mode) -> Result<(), #error> {
                use #private{#(#calls),*};
                #use_views
                on_pool(|| {
                    let [#(#acts),*] = &mut self.workspace.acts;
                    #(#lines)*
                    Ok(())
                })
            }
        }
    }

    /// The plan's steps from the logits back: each reads its output's gradient where the plan
    /// keeps it and writes or adds each input's part ([`GradTo`]), so the parts of a tensor
    /// several layers read are summed in the plan's order.
    pub(crate) fn graph_backward(&self) -> TokenStream {
        let krate = self.krate();
        let error = quote!(#krate::Error);
        let private = self.private(TokenStream::new());
        let use_views = self.use_views();
        let acts = self.acts_pattern();
        let grad_out = self.typed(quote!(GradOut));
        let buffers = self.exec.buffers();
        let mut used = vec![false; self.exec.grad_buffers()];
        let mut use_grad = |b: usize| {
            if let Some(u) = used.get_mut(b) {
                *u = true;
            }
            grad(b)
        };
        let mut lines = Vec::new();
        let mut calls = BTreeSet::from(["on_pool"]);
        let mut grad_out_used = false;
        // The convolution step whose backward a batch norm's joined with its own.
        let mut done = None;
        for (k, step) in self.exec.steps().iter().enumerate().rev() {
            if done == Some(k) {
                continue;
            }
            if let (Some(join), Some(conv)) = (step.join.norm_grad, k.checked_sub(1)) {
                lines.extend(self.norm_conv_backward(step, conv, join, &mut use_grad, &mut calls));
                done = Some(conv);
                continue;
            }
            let plan: &Plan<'_> = &self.layers[step.layer];
            let summary = plan.summary(self.model);
            let field = &plan.field;
            let dy = match step.dy {
                Grad::Unused => {
                    lines.push(self.mark(format!(
                        "{summary}: reaches no output, so no gradient reaches its parameters"
                    )));
                    calls.insert("zero_grads");
                    lines.push(quote!(zero_grads(&mut self.#field);));
                    continue;
                }
                Grad::Logits => quote!(&ws.dlogits),
                Grad::Buffer(b) => {
                    let g = use_grad(b);
                    quote!(#g)
                }
            };
            lines.push(self.mark(format!("backward {summary}")));
            let ty = Self::view_type(buffers[step.output]);
            if plan.layer.kind().is_merge() {
                // One call per input, in input order, as the executor makes them.
                let xs: Vec<&Ident> = step.inputs.iter().map(|&b| &acts[b]).collect();
                let y = &acts[step.output];
                for (input, to) in step.dxs.iter().enumerate() {
                    // An input whose gradient is the other's, read there.
                    if step.join.same_grad == Some(input) {
                        continue;
                    }
                    grad_out_used |= *to != GradTo::Discard;
                    let dx = match *to {
                        GradTo::Discard => continue,
                        GradTo::Write(b) => {
                            let g = use_grad(b);
                            quote!(GradOut::Write(&mut #g[..]))
                        }
                        GradTo::Add { into, .. } => {
                            let g = use_grad(into);
                            quote!(GradOut::Add(&mut #g[..]))
                        }
                    };
                    let input = lit(input);
                    lines.push(quote! {
                        merge_backward::<#ty, _>(&mut self.#field, [#(#xs),*], [#y, #dy], #input, #dx, batch)?;
                    });
                    calls.insert("merge_backward");
                }
            } else {
                let tx = Self::view_type(plan.layer.input_shape());
                let (x, y) = (&acts[step.input], &acts[step.output]);
                let dx = match step.dx {
                    None => quote!(None),
                    Some(b) => {
                        let g = use_grad(b);
                        quote!(Some(&mut #g[..]))
                    }
                };
                lines.push(quote! {
                    backward::<#tx, #ty>(&mut self.#field, #x, #y, #dy, #dx, batch)?;
                });
                calls.insert("backward");
                if let Some(GradTo::Add {
                    into,
                    scratch: Some(scratch),
                }) = step.dxs.first()
                {
                    let (into, scratch) = (use_grad(*into), use_grad(*scratch));
                    lines.push(quote! {
                        accumulate::<#tx>(&mut #into[..], #scratch, batch)?;
                    });
                    calls.insert("accumulate");
                }
            }
        }
        let calls = calls.into_iter().map(|call| format_ident!("{}", call));
        let use_grad_out = if grad_out_used {
            quote!(use #grad_out;)
        } else {
            TokenStream::new()
        };
        let names = used
            .iter()
            .enumerate()
            .map(|(b, &u)| if u { grad(b) } else { format_ident!("_") });
        let grads_binding = if used.iter().any(|&u| u) {
            quote!(let [#(#names),*] = &mut ws.grads;)
        } else {
            TokenStream::new()
        };
        quote! {
            /// Backpropagates the gradient in the logits' gradient buffer through every step,
            /// from the last to the first, summing the gradient parts of a tensor several layers
            /// read in the plan's order.
            fn run_backward(&mut self, batch: usize) -> Result<(), #error> {
                use #private{#(#calls),*};
                #use_grad_out
                #use_views
                on_pool(|| {
                    let ws = &mut self.workspace;
                    let [#(#acts),*] = &ws.acts;
                    #grads_binding
                    #(#lines)*
                    Ok(())
                })
            }
        }
    }
}

impl Gen<'_> {
    /// The backward of batch-norm step `step` joined with that of convolution step `conv`
    /// before it ([`cnnc_core::Join::norm_grad`]): one call, the convolution's input gradient
    /// where `join` puts it (written, or added into its sum as the convolution stores it), and
    /// the trade of two buffers' places it asks. `grad` names a gradient buffer's binding.
    pub(crate) fn norm_conv_backward(
        &self,
        step: &Step,
        conv: usize,
        join: JoinedNormGrad,
        grad: &mut dyn FnMut(usize) -> Ident,
        calls: &mut BTreeSet<&'static str>,
    ) -> Vec<TokenStream> {
        let acts = self.acts_pattern();
        let buffers = self.exec.buffers();
        let conv = &self.exec.steps()[conv];
        let (norm_plan, conv_plan) = (&self.layers[step.layer], &self.layers[conv.layer]);
        let mut lines = vec![self.mark(format!(
            "backward {} and {}",
            norm_plan.summary(self.model),
            conv_plan.summary(self.model)
        ))];
        let tx = Self::view_type(conv_plan.layer.input_shape());
        let ty = Self::view_type(buffers[conv.output]);
        let (x, y, norm_y) = (&acts[conv.input], &acts[conv.output], &acts[step.output]);
        let dy = match step.dy {
            Grad::Buffer(b) => {
                let g = grad(b);
                quote!(#g)
            }
            Grad::Logits => quote!(&ws.dlogits),
            Grad::Unused => return lines,
        };
        let grad_out = self.typed(quote!(GradOut));
        let dx = match join.conv_dx {
            GradTo::Discard => quote!(None),
            GradTo::Write(b) => {
                let g = grad(b);
                quote!(Some(#grad_out::Write(&mut #g[..])))
            }
            // Added into the sum as the convolution stores it, as the executor does.
            GradTo::Add { into, .. } => {
                let g = grad(into);
                quote!(Some(#grad_out::Add(&mut #g[..])))
            }
        };
        let (norm, conv) = (&norm_plan.field, &conv_plan.field);
        calls.insert("norm_conv_backward");
        lines.push(quote! {
            norm_conv_backward::<#tx, #ty>(&mut self.#norm, &mut self.#conv, [#x, #y], #norm_y, #dy, #dx, batch)?;
        });
        if let Some([a, b]) = join.swap {
            let (a, b) = (grad(a), grad(b));
            lines.push(quote!(::core::mem::swap(#a, #b);));
        }
        lines
    }
}

/// A `mul` input `x` of per-sample `shape` as the runtime's `typed::Broadcast` view of the
/// output's `target` shape: itself when the shapes agree, a `[C, 1, 1]` gate spread over `H x W`
/// (typed: only a `[C, 1, 1]` view has that method), or any other size-1 broadcast (checked when
/// it runs).
fn broadcast(x: TokenStream, shape: Shape, target: Shape) -> TokenStream {
    match (shape, target) {
        _ if shape == target => quote!(#x.as_broadcast()),
        (Shape::Chw([c, 1, 1]), Shape::Chw([tc, h, w])) if c == tc => {
            let (h, w) = (lit(h), lit(w));
            quote!(#x.expand_hw::<#h, #w>())
        }
        (_, target) => {
            let dims = target.dims().into_iter().map(lit);
            quote!(#x.expand::<#(#dims),*>()?)
        }
    }
}
