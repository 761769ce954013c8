"""Config dataclasses of the ``actlab train`` recipes (no torch here: the CLI builds its flags from them)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class InductionConfig:
    """Induction heads under clamps: a 2-layer attention-only transformer on repeated random sequences."""

    out: str = ""
    """output folder for induction.json / induction.png ('' = none)"""
    vocab: int = 20
    """token vocabulary"""
    context: int = 24
    """tokens per sequence"""
    min_len: int = 3
    """shortest repeated segment"""
    max_len: int = 8
    """longest repeated segment (2*max_len <= context)"""
    d_model: int = 64
    """residual width"""
    n_heads: int = 4
    """heads per layer"""
    batch: int = 32
    """sequences per step"""
    steps: int = 2000
    """optimizer steps"""
    lr: float = 3e-3
    """Adam learning rate"""
    eval_every: int = 25
    """steps between evaluations"""
    eval_batch: int = 64
    """held-out sequences per evaluation"""
    onset_fraction: float = 0.5
    """phase change = first step with second-copy loss below this fraction of the first-copy loss"""
    grad: str = "block"
    """gradient mode of the clamps: 'block' (a clamp is a constant) or 'through'"""
    seed: int = 0
    """seed (model, data order, evaluation set)"""

    def __post_init__(self):
        if 2 * self.max_len > self.context or self.min_len < 2 or self.min_len > self.max_len:
            raise ValueError(f"need 2 <= min_len <= max_len and 2*max_len <= context; got min_len={self.min_len}, "
                             f"max_len={self.max_len}, context={self.context}")
        if self.grad not in ("through", "block"):
            raise ValueError(f"grad={self.grad!r}; expected 'through' or 'block'")
        if self.steps < 1 or self.eval_every < 1:
            raise ValueError("need steps >= 1 and eval_every >= 1")


@dataclass
class FewShotConfig:
    """In-context few-shot classification with held-out classes (the induction paper's Omniglot setting, on the
    bundled digits): exemplar-label pairs then a query; labels random per sequence."""

    out: str = ""
    """output folder for fewshot.json and fewshot.png ('' = none)"""
    train_classes: int = 7
    """digit classes 0..k-1 train; the rest are held out (evaluation only)"""
    transforms: int = 8
    """class augmentation: each of the first k dihedral transforms (4 rotations, then the 4 of the mirror image) of a
    training digit is its own class (1 = the plain digits)"""
    ways: int = 2
    """classes per sequence"""
    shots: int = 2
    """context exemplars per class"""
    n_labels: int = 2
    """label tokens (each sequence draws `ways` distinct ones at random)"""
    d_model: int = 64
    """model width"""
    n_heads: int = 4
    """heads per layer"""
    batch: int = 64
    """sequences per step"""
    steps: int = 2000
    """training steps"""
    lr: float = 1e-3
    """Adam learning rate"""
    eval_every: int = 100
    """steps between evaluations"""
    eval_batch: int = 512
    """evaluation sequences (training classes and held-out classes)"""
    onset_acc: float = 0.75
    """onset: first evaluation whose held-out in-context accuracy reaches this"""
    grad: str = "block"
    """gradient mode of the clamps: 'block' or 'through'"""
    seed: int = 0
    """seed"""

    def __post_init__(self):
        if not 2 <= self.ways <= self.n_labels or self.shots < 1:
            raise ValueError(f"need 2 <= ways <= n_labels and shots >= 1; got ways={self.ways}, "
                             f"n_labels={self.n_labels}, shots={self.shots}")
        if not self.ways <= self.train_classes <= 10 - self.ways:
            raise ValueError(f"train_classes must leave >= ways={self.ways} of the 10 digits on each side; "
                             f"got {self.train_classes}")
        if self.grad not in ("through", "block"):
            raise ValueError(f"grad must be 'through' or 'block'; got {self.grad!r}")
        if self.steps < 1 or self.eval_every < 1 or not 1 <= self.transforms <= 8:
            raise ValueError(f"steps and eval_every must be >= 1 and transforms in 1..8; got steps={self.steps}, "
                             f"eval_every={self.eval_every}, transforms={self.transforms}")


@dataclass
class ConceptConfig:
    """Concept-space trajectories and hidden capabilities on the planted conditional generator."""

    out: str = ""
    """output folder for concepts.json and plots ('' = none)"""
    steps: int = 10000
    """last training step of the planted schedule"""
    n_checkpoints: int = 40
    """log-spaced checkpoints"""
    kappa_max: float = 12.0
    """asymptotic scale of the planted model"""
    tau: float = 1000.0
    """steps to half the asymptotic scale"""
    theta: float = 2.0
    """output threshold: a concept is produced when kappa * (W c)_j > theta"""
    mix: float = 0.5
    """interference between concepts (composition is harder the larger it is)"""
    signal: tuple[float, float] = (1.0, 1.0)
    """concept signal strengths (stronger is learned earlier)"""
    over_scale: float = 1.5
    """over-prompting: conditioning scaled by this"""
    noise: float = 0.1
    """output noise (and of the real data)"""
    samples: int = 200
    """samples per prompt and checkpoint"""
    threshold: float = 0.5
    """capability onset = first checkpoint whose accuracy reaches this"""
    seed: int = 0
    """seed"""

    def __post_init__(self):
        if self.n_checkpoints < 2 or self.steps < 1 or self.tau <= 0:
            raise ValueError("need steps >= 1, n_checkpoints >= 2, tau > 0")
        if len(self.signal) != 2:
            raise ValueError(f"signal must give 2 strengths; got {self.signal}")


@dataclass
class TeacherConfig:
    """Random-teacher self-distillation on clustered data (and on isotropic random inputs as the control)."""

    out: str = ""
    """output folder for random_teacher.json and a plot ('' = none)"""
    n_clusters: int = 10
    """Gaussian clusters (the probe's labels)"""
    d_in: int = 16
    """dimension of the Gaussian mixture (the data's intrinsic dimension)"""
    d_ambient: int = 0
    """dimension the fixed random MLP maps the mixture into (0 = d_in); above d_in the data lie on a d_in-dim
    subspace and the isotropic control inputs mostly off it"""
    separation: float = 2.0
    """cluster-centre scale (relative to unit within-cluster noise)"""
    width: int = 16
    """backbone width (the probed embedding)"""
    head: str = "dino"
    """projection head: 'dino' (MLP -> l2-normalised bottleneck -> weight-normalised prototypes) or 'mlp'"""
    hidden: int = 128
    """projection-head hidden width"""
    bottleneck: int = 32
    """DINO head: bottleneck dimension (l2-normalised)"""
    d_out: int = 256
    """projection-head output (softmax) dimension: prototypes"""
    n_train: int = 2000
    """unlabelled training inputs (also the probe's training set)"""
    n_test: int = 1000
    """probe test inputs"""
    steps: int = 600
    """distillation steps"""
    batch: int = 128
    """inputs per step"""
    lr: float = 3e-3
    """Adam learning rate"""
    tau_t: float = 0.04
    """teacher temperature (below tau_s: the targets are sharpened)"""
    tau_s: float = 0.1
    """student temperature"""
    center: bool = False
    """centre the teacher's logits by an EMA of their batch mean (DINO's centring)"""
    center_momentum: float = 0.9
    """EMA momentum of the centre"""
    init_noise: float = 1.0
    """student init = (1 - a) * teacher + a * fresh init (1 = independent init, 0 = at the teacher)"""
    data: str = "clusters"
    """'clusters' (the Gaussian-mixture toy) or 'digits' (scikit-learn's 8x8 digits, pixels standardised; calibrated
    with --width 32 --activation gelu --hidden 256 --bottleneck 64 --steps 500)"""
    activation: str = "relu"
    """backbone nonlinearity: 'relu' or 'gelu'"""
    seed: int = 0
    """seed"""

    def __post_init__(self):
        if self.data not in ("clusters", "digits"):
            raise ValueError(f"data={self.data!r}; expected 'clusters' or 'digits'")
        if self.activation not in ("relu", "gelu"):
            raise ValueError(f"activation={self.activation!r}; expected 'relu' or 'gelu'")
        if self.d_ambient and self.d_ambient < self.d_in:
            raise ValueError(f"d_ambient must be 0 or >= d_in={self.d_in}; got {self.d_ambient}")
        if not 0.0 <= self.init_noise <= 1.0:
            raise ValueError(f"init_noise must be in [0, 1]; got {self.init_noise}")
        if self.tau_t <= 0 or self.tau_s <= 0:
            raise ValueError("temperatures must be > 0")
        if self.head not in ("dino", "mlp"):
            raise ValueError(f"head={self.head!r}; expected 'dino' or 'mlp'")
        if not 0.0 <= self.center_momentum < 1.0:
            raise ValueError(f"center_momentum must be in [0, 1); got {self.center_momentum}")


@dataclass
class SharpConfig:
    """Hidden-activation replay (SHARP) on class-incremental digits."""

    out: str = ""
    """output folder for sharp.json and a plot ('' = none)"""
    classes_per_episode: int = 2
    """new classes per episode (10 digits -> 5 episodes)"""
    width: int = 128
    """hidden width (the replay layer is the bottom's output)"""
    steps_per_episode: int = 60
    """optimizer steps per episode"""
    batch: int = 64
    """new-data samples per step"""
    lr: float = 1e-3
    """Adam learning rate"""
    per_class: int = 20
    """stored activations per replayed class"""
    replay_classes: int = 2
    """how many of the most recently learned classes the buffer keeps"""
    replay_weight: float = 1.0
    """weight of the replay loss"""
    bottom_lr_scale: float = 0.1
    """learning rate of the bottom layers relative to lr (they always train; smaller = less activation drift)"""
    blurry: float = 0.0
    """blurry task boundaries: fraction of each batch drawn from the other episodes' classes (0 = disjoint)"""
    sparsity: float = 0.0
    """fraction of each weight matrix's connections that are off (0 = dense; > 0: sparse dynamic connectivity)"""
    rewire_every: int = 20
    """steps between prune-and-regrow rewirings (sparse runs)"""
    rewire_fraction: float = 0.2
    """fraction of a matrix's active connections pruned (smallest |w|) and regrown at random per rewiring"""
    allocate: bool = False
    """allocate hidden units to tasks (replaces the periodic rewiring): allocated units read only older units and
    freeze once their classes leave the replay window"""
    coverage: float = 0.9
    """allocation: each phase allocates the units carrying this fraction of a layer's activation on the new task"""
    phases: int = 3
    """allocation: phases per episode (units are reselected at the start of each)"""
    stm_tasks: int = 1
    """allocation: episodes a unit stays trainable after its own (then it is frozen)"""
    seed: int = 0
    """seed"""

    def __post_init__(self):
        if not 0.0 < self.coverage <= 1.0 or self.phases < 1 or self.stm_tasks < 0:
            raise ValueError(f"need 0 < coverage <= 1, phases >= 1, stm_tasks >= 0; got coverage={self.coverage}, "
                             f"phases={self.phases}, stm_tasks={self.stm_tasks}")
        if self.classes_per_episode < 1 or self.per_class < 1 or self.replay_classes < 1:
            raise ValueError("classes_per_episode, per_class and replay_classes must be >= 1")
        if not 0.0 <= self.blurry < 1.0:
            raise ValueError(f"blurry must be in [0, 1); got {self.blurry}")
        if not 0.0 <= self.sparsity < 1.0 or not 0.0 <= self.rewire_fraction <= 1.0 or self.rewire_every < 1:
            raise ValueError(f"need 0 <= sparsity < 1, 0 <= rewire_fraction <= 1, rewire_every >= 1; got "
                             f"sparsity={self.sparsity}, rewire_fraction={self.rewire_fraction}, "
                             f"rewire_every={self.rewire_every}")


@dataclass
class VatConfig:
    """Attention VAT on a keyword-classification toy (embedding + additive attention + linear)."""

    out: str = ""
    """output folder for vat.json ('' = none)"""
    vocab: int = 50
    """tokens (the first n_keywords are keywords)"""
    n_keywords: int = 4
    """keyword tokens (label = keyword id mod n_classes)"""
    n_classes: int = 2
    """classes"""
    length: int = 12
    """tokens per sequence"""
    d: int = 32
    """embedding width"""
    n_train: int = 1000
    """training sequences"""
    n_test: int = 500
    """held-out sequences"""
    n_unlabelled: int = 0
    """extra unlabelled sequences; each step the adversarial term also covers a batch of them (0 = labelled only)"""
    steps: int = 150
    """optimizer steps"""
    batch: int = 32
    """sequences per step"""
    lr: float = 3e-3
    """Adam learning rate"""
    eps: float = 1.0
    """perturbation norm on the attention scores (per example)"""
    xi: float = 1e-2
    """finite-difference step of the power iteration"""
    lam: float = 1.0
    """weight of the VAT term"""
    variant: str = "vat"
    """'vat' (any direction) or 'ivat' (directions from the batch's attention differences)"""
    seeds: int = 3
    """seeds averaged"""
    seed: int = 0
    """first seed"""

    def __post_init__(self):
        if self.eps < 0 or self.xi <= 0 or self.lam < 0 or self.n_unlabelled < 0:
            raise ValueError("need eps >= 0, xi > 0, lam >= 0, n_unlabelled >= 0")
        if not 0 < self.n_keywords < self.vocab or self.n_classes < 2:
            raise ValueError("need 0 < n_keywords < vocab and n_classes >= 2")
        if self.variant not in ("vat", "ivat"):
            raise ValueError(f"variant={self.variant!r}; expected 'vat' or 'ivat'")


@dataclass
class LmEmergenceConfig:
    """Massive-activation and sparsity emergence over the checkpoints of a small LM trained on the demo corpus."""

    out: str = "lm_emergence"
    """output folder (checkpoints, metrics.jsonl, lm_emergence.png/.json)"""
    data: str = "demo"
    """text source (.txt/.jsonl/.parquet/folder) or 'demo' (the bundled demo corpus)"""
    n_layers: int = 4
    """transformer blocks"""
    d_model: int = 128
    """residual width"""
    n_heads: int = 4
    """attention heads"""
    d_ff: int = 512
    """ReLU MLP hidden width"""
    context: int = 128
    """tokens per context"""
    batch: int = 16
    """contexts per step"""
    steps: int = 1000
    """optimizer steps"""
    lr: float = 3e-3
    """AdamW peak learning rate (20-step warm-up, cosine decay)"""
    n_checkpoints: int = 16
    """log-spaced checkpoints, step 0 included"""
    probe_contexts: int = 8
    """held-out probe contexts the metrics are measured on"""
    max_tokens: int = 400000
    """corpus tokens used"""
    fit: bool = True
    """fit the emergence curve of each layer's series (actlab.stats.fit_curve)"""
    seed: int = 0
    """seed"""

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.steps < 1 or self.n_checkpoints < 2:
            raise ValueError("need steps >= 1 and n_checkpoints >= 2")
