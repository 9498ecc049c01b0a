"""Every text of the web UI in English and Chinese (中文).

Recipe keys: the English help is the recipe dataclass's own (one source of truth); this module adds a
short label per key in both languages and the Chinese help. A key added to the recipe before its
translation shows its English help and a label made from its name. UI elements (buttons, headings,
tabs, the fields that are not recipe keys) are looked up by their ``elem_id``.
"""

from __future__ import annotations

__all__ = [
    "LANGS",
    "GROUPS",
    "MESSAGES",
    "RECIPE",
    "UI",
    "message",
    "plain",
    "recipe_help",
    "recipe_label",
    "ui_text",
]

LANGS = {"en": "English", "zh": "中文"}

GROUPS = {
    "model": {"en": "Model and device", "zh": "模型与设备"},
    "data": {"en": "Data", "zh": "数据"},
    "lora": {"en": "LoRA", "zh": "LoRA 参数"},
    "train": {"en": "Training", "zh": "训练"},
    "tracking": {"en": "Tracking", "zh": "实验跟踪"},
    "speed": {"en": "Speed: batching and kernels", "zh": "速度：批处理与内核"},
}

# recipe key -> (English label, Chinese label, Chinese help)
RECIPE: dict[str, tuple[str, str, str]] = {
    "model_name_or_path": (
        "Model",
        "模型",
        "基座模型：本地文件夹、模型仓库 ID（`ORG/NAME`），或内置演示模型 `demo://tiny-llama`。",
    ),
    "hub": (
        "Hub",
        "模型仓库",
        "裸 `ORG/NAME` ID 所在的仓库：`hf`（Hugging Face）或 `modelers`（魔乐社区）；`auto` = `$DUOTUNE_HUB`，否则 hf。`hf://ORG/NAME` 与 `modelers://ORG/NAME` 在 ID 中直接指明仓库。",
    ),
    "revision": ("Revision", "版本", "仓库模型的分支、标签或提交（默认 main）。"),
    "cache_dir": (
        "Cache folder",
        "缓存目录",
        "下载缓存；默认使用仓库客户端自己的缓存（~/.cache/huggingface、~/.cache/openmind）。",
    ),
    "allow_pickle_weights": (
        "Allow pickle weights",
        "允许 pickle 权重",
        "同时加载 pickle 权重（*.bin），加载时可能执行代码；默认只加载 safetensors。",
    ),
    "trust_remote_code": (
        "Trust remote code",
        "信任远程代码",
        "允许运行模型文件夹或仓库中自带的 Python 代码。",
    ),
    "device": (
        "Device",
        "设备",
        "在哪里训练。`auto` 依次尝试 NPU、CUDA、MPS、CPU。`train --device` 可覆盖。",
    ),
    "framework": (
        "Framework",
        "训练框架",
        "由谁的 Trainer 执行训练循环：`auto` = 在 NPU 上且安装了 `openmind` 时用 openMind 的，否则用 transformers 的。",
    ),
    "attn_implementation": (
        "Attention",
        "注意力实现",
        "注意力内核。`auto` 由后端选择（CUDA 上装有 flash-attn 时用 FlashAttention-2，否则用 SDPA）。",
    ),
    "npu_jit_compile": (
        "NPU JIT compile",
        "NPU 即时编译",
        "仅昇腾：即时编译算子，而不用预编译的二进制算子（也可设 `DUOTUNE_NPU_JIT_COMPILE=1`）。",
    ),
    "dataset": (
        "Dataset",
        "数据集",
        "训练数据：一个或多个 JSON/JSONL 文件，或内置演示数据 `demo://counselling`。",
    ),
    "dataset_format": ("Data format", "数据格式", "行格式。`auto` 根据每个文件第一行的键自动识别。"),
    "template": (
        "Chat template",
        "对话模板",
        "对话模板。`auto` 使用分词器自带的 `chat_template`；内置名称（deepseek、chatml、llama3、llama2）会替换它，用于没有模板的分词器。",
    ),
    "cutoff_len": ("Cutoff length", "截断长度", "每个样本的最大 token 数；更长的对话保留开头部分。"),
    "max_samples": ("Max samples", "最大样本数", "每个数据文件最多使用的行数。"),
    "val_size": ("Validation size", "验证集比例", "留作评估的样本比例，范围 [0, 1)。"),
    "skip_invalid_rows": (
        "Skip invalid rows",
        "跳过无效行",
        "跳过并统计格式错误的行，而不是在第一处错误时停止。",
    ),
    "preprocessing_num_workers": ("Preprocessing workers", "预处理进程数", "对数据集分词所用的进程数。"),
    "lora_rank": ("LoRA rank", "LoRA 秩", "LoRA 的秩 r。"),
    "lora_alpha": ("LoRA alpha", "LoRA 缩放系数", "LoRA 缩放系数 alpha；默认为 2 × lora_rank。"),
    "lora_dropout": ("LoRA dropout", "LoRA 随机丢弃", "LoRA 输入上的 dropout，范围 [0, 1)。"),
    "lora_target": (
        "LoRA modules",
        "LoRA 作用模块",
        "加 LoRA 的模块：`all`（除输出层外所有线性层），或如 `q_proj,v_proj` 的列表。",
    ),
    "additional_target": (
        "Extra trainable modules",
        "附加训练模块",
        "完整训练并随适配器一起保存的额外模块（peft 的 `modules_to_save`）。",
    ),
    "loraplus_lr_ratio": (
        "LoRA+ ratio",
        "LoRA+ 学习率比例",
        "LoRA+：B 矩阵的学习率 = learning_rate × 此比例（常用 16）。",
    ),
    "use_rslora": ("rsLoRA", "rsLoRA", "秩稳定的 LoRA 缩放（alpha / sqrt(r)）。"),
    "use_dora": ("DoRA", "DoRA", "权重分解的 LoRA（DoRA）。"),
    "pissa_init": (
        "PiSSA init",
        "PiSSA 初始化",
        "用基座权重的主奇异向量初始化 LoRA（PiSSA）。保存的适配器会转换回普通 LoRA，可直接用于未修改的基座模型。",
    ),
    "pissa_iter": (
        "PiSSA iterations",
        "PiSSA 迭代次数",
        "PiSSA 快速 SVD 的迭代次数；-1 为完整 SVD（7B 模型上很慢）。",
    ),
    "output_dir": ("Output folder", "输出目录", "适配器、日志、曲线图和检查点的保存位置。"),
    "overwrite_output_dir": (
        "Overwrite output folder",
        "覆盖输出目录",
        "替换输出目录中之前一次运行的结果，而不是拒绝启动。",
    ),
    "per_device_train_batch_size": ("Batch size", "批大小", "每个设备每步的样本数。"),
    "per_device_eval_batch_size": (
        "Eval batch size",
        "评估批大小",
        "每个设备每个评估步的样本数；默认等于训练批大小。",
    ),
    "gradient_accumulation_steps": ("Gradient accumulation", "梯度累积", "每次参数更新前累加梯度的步数。"),
    "learning_rate": ("Learning rate", "学习率", "峰值学习率（LoRA 通常在 1e-4 到 1e-3 之间效果最好）。"),
    "num_train_epochs": ("Epochs", "训练轮数", "遍历训练数据的轮数。"),
    "max_steps": ("Max steps", "最大步数", "在这么多次参数更新后停止；-1 = 按训练轮数。"),
    "lr_scheduler_type": (
        "LR scheduler",
        "学习率调度器",
        "学习率调度：linear、cosine、cosine_with_restarts、polynomial、constant、constant_with_warmup、inverse_sqrt、reduce_lr_on_plateau、cosine_with_min_lr、warmup_stable_decay。",
    ),
    "warmup_ratio": ("Warmup ratio", "预热比例", "用于学习率预热的更新步比例，范围 [0, 1)。"),
    "warmup_steps": ("Warmup steps", "预热步数", "预热的更新步数（与 warmup_ratio 二选一）。"),
    "max_grad_norm": ("Max grad norm", "最大梯度范数", "梯度裁剪的范数；0 表示不裁剪。"),
    "weight_decay": ("Weight decay", "权重衰减", "AdamW 权重衰减。"),
    "optim": ("Optimizer", "优化器", "Hugging Face TrainingArguments 中的优化器名称。"),
    "neftune_noise_alpha": (
        "NEFTune alpha",
        "NEFTune 噪声系数",
        "NEFTune：训练时加到嵌入上的噪声（例如 5）。",
    ),
    "gradient_checkpointing": (
        "Gradient checkpointing",
        "梯度检查点",
        "在反向传播时重新计算激活以节省显存（单卡训练 7B 模型时需要）。",
    ),
    "compute_type": (
        "Precision",
        "计算精度",
        "训练精度。`auto` = 设备支持时用 bf16，否则加速器上用 fp16、CPU 上用 fp32。",
    ),
    "bf16": ("bf16", "bf16", "`compute_type: bf16` 的 Hugging Face 写法。"),
    "fp16": ("fp16", "fp16", "`compute_type: fp16` 的 Hugging Face 写法。"),
    "pad_to_multiple_of": (
        "Pad to multiple of",
        "填充到倍数",
        "把每个批次填充到此长度的倍数（8 适合 Tensor Core）；null 表示填充到最长样本。",
    ),
    "logging_steps": ("Logging steps", "日志间隔", "每隔这么多次更新记录一次损失、学习率和梯度范数。"),
    "save_steps": ("Save steps", "保存间隔", "每隔这么多次更新写一个 checkpoint-N 文件夹。"),
    "save_total_limit": ("Checkpoints kept", "保留检查点数", "只保留最新的这么多个检查点。"),
    "eval_steps": (
        "Eval steps",
        "评估间隔",
        "每隔这么多次更新评估一次（需要 val_size > 0）；不设则每轮评估一次。",
    ),
    "seed": ("Seed", "随机种子", "初始化、数据顺序和 dropout 的随机种子。"),
    "resume_from_checkpoint": (
        "Resume from checkpoint",
        "从检查点恢复",
        "从一个检查点文件夹继续，或 `auto` 表示输出目录中最新的完整检查点。",
    ),
    "dataloader_num_workers": ("Data loader workers", "数据加载进程数", "组装批次的工作进程数。"),
    "skip_nonfinite_steps": (
        "Non-finite steps skipped",
        "可跳过的非有限步数",
        "损失或梯度为 NaN/inf 的更新最多可跳过（不应用）这么多次，之后训练以退出码 3 停止；0 表示第一次就停止。",
    ),
    "deterministic": (
        "Deterministic",
        "确定性训练",
        "使用确定性算法，基座模型不做 dropout（`duotune parity run` 使用的设置）。",
    ),
    "deepspeed": (
        "DeepSpeed",
        "DeepSpeed",
        "DeepSpeed：`zero2`、`zero3`（configs/deepspeed/）或 DeepSpeed JSON 配置文件路径。仅 CUDA 和 NPU。",
    ),
    "fsdp": (
        "FSDP",
        "FSDP",
        "通过 accelerate 使用 FSDP：`full_shard` 或 `shard_grad_op`（自动包装解码层）。仅 CUDA 和 NPU。",
    ),
    "report_to": (
        "Trackers",
        "实验跟踪工具",
        "实验跟踪：`swanlab`（默认）、transformers 支持的其他名称，或 `none`。",
    ),
    "swanlab_project": ("SwanLab project", "SwanLab 项目", "SwanLab 项目；默认 `duotune`。"),
    "swanlab_workspace": ("SwanLab workspace", "SwanLab 工作区", "SwanLab 工作区（个人或组织）。"),
    "swanlab_mode": (
        "SwanLab mode",
        "SwanLab 模式",
        "`auto` = 配置了 SwanLab API 密钥时在线，否则离线（保存在 output_dir/swanlog，可用 `swanlab sync` 上传）。从不提示登录。",
    ),
    "experiment_name": ("Experiment name", "实验名称", "在 SwanLab 等跟踪工具中的运行名称。"),
    "description": ("Description", "描述", "运行的自由文本描述（SwanLab）。"),
    "plot_loss": (
        "Plot loss",
        "绘制损失曲线",
        "结束时写出 training_loss.png（以及 training_eval_loss.png）。",
    ),
    # speed: batching and kernels
    "padding_free": (
        "Padding-free batches",
        "无填充批次",
        "把一个微批次拼成一条序列训练（每个样本的 position_ids 从 0 重新开始，注意力限制在样本内部），不浪费填充 token；`auto` 在精确的地方开启。",
    ),
    "packing": (
        "Packing",
        "样本打包",
        "把样本打包成最长 cutoff_len 个 token 的行，注意力仍限制在每个样本内部；会减少每轮的更新次数。",
    ),
    "group_by_length": (
        "Group by length",
        "按长度分组",
        "把长度相近的样本放进同一批次，减少填充（用于填充批次路径）。",
    ),
    "flash_attn": (
        "Flash attention",
        "Flash 注意力",
        "注意力内核：auto、fa2、sdpa 或 eager；`auto` 在可用时选择 FlashAttention-2。",
    ),
    "use_liger_kernel": (
        "Liger kernels",
        "Liger 内核",
        "在 CUDA 上安装了 liger-kernel 时使用其融合内核（transformers 自带的开关）。",
    ),
    "npu_fused_ops": (
        "NPU fused ops",
        "NPU 融合算子",
        "昇腾：用 Ascend 适配层的融合算子（npu_rms_norm、npu_rotary_mul、npu_swiglu）替换 RMSNorm、旋转位置编码和 SwiGLU。",
    ),
    "fast_dropout": (
        "Fast dropout",
        "快速 Dropout",
        "CPU：用 32 位随机整数生成 LoRA 的 dropout 掩码（比 PyTorch 逐元素抽样快约 3 倍；分布相同，抽样结果不同）；`false` 使用 PyTorch 的 nn.Dropout。",
    ),
}

# elem_id -> {"en": {...}, "zh": {...}} with "label" (and "info" or "value" for buttons/markdown)
UI: dict[str, dict[str, dict[str, str]]] = {
    "lang": {"en": {"label": "Language"}, "zh": {"label": "语言 / Language"}},
    "title": {
        "en": {"value": "## duotune · LoRA fine-tuning on CUDA, Ascend NPU and CPU"},
        "zh": {"value": "## duotune · 在 CUDA、昇腾 NPU 和 CPU 上进行 LoRA 微调"},
    },
    # tabs
    "tab_train": {"en": {"label": "Train"}, "zh": {"label": "训练"}},
    "tab_eval": {"en": {"label": "Evaluate"}, "zh": {"label": "评估"}},
    "tab_chat": {"en": {"label": "Chat"}, "zh": {"label": "对话"}},
    "tab_export": {"en": {"label": "Export"}, "zh": {"label": "导出"}},
    "tab_runs": {"en": {"label": "Runs"}, "zh": {"label": "运行记录"}},
    # train tab: recipe file
    "recipe_path": {
        "en": {"label": "Recipe file", "info": "A shipped recipe or the path of your own YAML file"},
        "zh": {"label": "配方文件", "info": "内置配方，或你自己的 YAML 文件路径"},
    },
    "recipe_load": {"en": {"value": "Load recipe"}, "zh": {"value": "加载配方"}},
    "recipe_save_path": {
        "en": {"label": "Save as", "info": "Writes every key of the form (never tokens)"},
        "zh": {"label": "另存为", "info": "写出表单中的全部键（从不包含令牌）"},
    },
    "recipe_save": {"en": {"value": "Save recipe"}, "zh": {"value": "保存配方"}},
    "command_show": {"en": {"value": "Preview command"}, "zh": {"value": "预览命令"}},
    "command_preview": {
        "en": {"label": "Command line (what Start runs)"},
        "zh": {"label": "命令行（开始训练时运行的命令）"},
    },
    "recipe_yaml": {"en": {"label": "Recipe as YAML"}, "zh": {"label": "YAML 形式的配方"}},
    "recipe_acc": {"en": {"label": "Recipe file and command"}, "zh": {"label": "配方文件与命令"}},
    # model and device
    "model_info": {"en": {"label": "Model source"}, "zh": {"label": "模型来源"}},
    "device_info": {"en": {"label": "Devices"}, "zh": {"label": "设备"}},
    "nproc": {
        "en": {
            "label": "Processes",
            "info": "torchrun data parallel, up to the devices",
        },
        "zh": {"label": "进程数", "info": "torchrun 数据并行，不超过设备数"},
    },
    # data
    "data_info": {"en": {"label": "Dataset"}, "zh": {"label": "数据集"}},
    "data_preview_btn": {"en": {"value": "Preview data"}, "zh": {"value": "预览数据"}},
    "data_preview": {
        "en": {"label": "Examples as training sees them (learned tokens highlighted)"},
        "zh": {"label": "训练看到的样本（高亮部分为学习的 token）"},
    },
    "data_stats": {"en": {"label": "Encoding"}, "zh": {"label": "编码统计"}},
    # secrets
    "secrets_acc": {
        "en": {"label": "Tokens (kept in memory only, passed to the run's environment)"},
        "zh": {"label": "令牌（只保存在内存中，通过环境变量传给训练进程）"},
    },
    "hf_token": {
        "en": {"label": "HF_TOKEN", "info": "Hugging Face token for private or gated models"},
        "zh": {"label": "HF_TOKEN", "info": "访问私有或受限 Hugging Face 模型的令牌"},
    },
    "modelers_token": {
        "en": {"label": "MODELERS_TOKEN", "info": "Modelers token for private models"},
        "zh": {"label": "MODELERS_TOKEN", "info": "访问魔乐社区私有模型的令牌"},
    },
    "swanlab_api_key": {
        "en": {"label": "SWANLAB_API_KEY", "info": "Uploads the run to SwanLab (online mode)"},
        "zh": {"label": "SWANLAB_API_KEY", "info": "把运行上传到 SwanLab（在线模式）"},
    },
    # run
    "run_head": {"en": {"value": "### Run"}, "zh": {"value": "### 运行"}},
    "start_btn": {"en": {"value": "Start"}, "zh": {"value": "开始"}},
    "abort_btn": {"en": {"value": "Abort"}, "zh": {"value": "中止"}},
    "kill_btn_text": {"en": {"value": "Kill now"}, "zh": {"value": "立即终止"}},
    "refresh_ckpt": {"en": {"value": "↻"}, "zh": {"value": "↻"}},
    "run_error": {"en": {"label": "Error"}, "zh": {"label": "错误"}},
    "run_status": {"en": {"label": "Status"}, "zh": {"label": "状态"}},
    "loss_plot": {"en": {"label": "Loss"}, "zh": {"label": "损失"}},
    "lr_plot": {"en": {"label": "Learning rate"}, "zh": {"label": "学习率"}},
    "run_stats": {"en": {"label": "Throughput and memory"}, "zh": {"label": "吞吐与显存"}},
    "run_log": {"en": {"label": "Last lines of the log"}, "zh": {"label": "日志末尾"}},
    # evaluate
    "eval_adapter": {
        "en": {"label": "Adapter", "info": "A training output folder or one of its checkpoints"},
        "zh": {"label": "适配器", "info": "训练输出目录或其中的检查点"},
    },
    "eval_model": {
        "en": {"label": "Base model", "info": "Empty: the base the adapter was trained on"},
        "zh": {"label": "基座模型", "info": "留空：使用训练该适配器的基座模型"},
    },
    "eval_dataset": {"en": {"label": "Dataset"}, "zh": {"label": "数据集"}},
    "eval_format": {"en": {"label": "Data format"}, "zh": {"label": "数据格式"}},
    "eval_cutoff": {
        "en": {"label": "Cutoff length", "info": "Empty: the adapter's training cutoff_len"},
        "zh": {"label": "截断长度", "info": "留空：使用训练时的 cutoff_len"},
    },
    "eval_max_samples": {"en": {"label": "Max samples"}, "zh": {"label": "最大样本数"}},
    "eval_batch": {"en": {"label": "Batch size"}, "zh": {"label": "批大小"}},
    "eval_device": {"en": {"label": "Device"}, "zh": {"label": "设备"}},
    "eval_dtype": {"en": {"label": "Dtype"}, "zh": {"label": "数据类型"}},
    "eval_btn": {"en": {"value": "Evaluate"}, "zh": {"value": "开始评估"}},
    "eval_command": {"en": {"label": "Command"}, "zh": {"label": "命令"}},
    "eval_result": {"en": {"label": "Result"}, "zh": {"label": "结果"}},
    "eval_log": {"en": {"label": "Output"}, "zh": {"label": "输出"}},
    # chat
    "chat_adapter": {
        "en": {"label": "Adapter", "info": "Empty: the base model alone"},
        "zh": {"label": "适配器", "info": "留空：只用基座模型"},
    },
    "chat_model": {
        "en": {"label": "Base model", "info": "Empty: the base the adapter was trained on"},
        "zh": {"label": "基座模型", "info": "留空：使用训练该适配器的基座模型"},
    },
    "chat_device": {"en": {"label": "Device"}, "zh": {"label": "设备"}},
    "chat_dtype": {"en": {"label": "Dtype"}, "zh": {"label": "数据类型"}},
    "chat_load": {"en": {"value": "Load model"}, "zh": {"value": "加载模型"}},
    "chat_unload": {"en": {"value": "Unload"}, "zh": {"value": "卸载模型"}},
    "chat_status": {"en": {"label": "Model"}, "zh": {"label": "模型"}},
    "chat_mode": {
        "en": {
            "label": "Answer with",
            "info": "Side by side: the base model and the adapter answer the same prompt",
        },
        "zh": {"label": "回答方式", "info": "并排：基座模型和适配器回答同一个问题"},
    },
    "chat_base": {"en": {"label": "Base model"}, "zh": {"label": "基座模型"}},
    "chat_tuned": {"en": {"label": "With adapter"}, "zh": {"label": "加适配器"}},
    "chat_input": {
        "en": {"label": "Message", "info": "Enter sends"},
        "zh": {"label": "消息", "info": "回车发送"},
    },
    "chat_send": {"en": {"value": "Send"}, "zh": {"value": "发送"}},
    "chat_clear": {"en": {"value": "Clear"}, "zh": {"value": "清空"}},
    "chat_system": {"en": {"label": "System prompt"}, "zh": {"label": "系统提示词"}},
    "gen_acc": {"en": {"label": "Generation settings"}, "zh": {"label": "生成设置"}},
    "max_new_tokens": {"en": {"label": "Max new tokens"}, "zh": {"label": "最大生成 token 数"}},
    "temperature": {"en": {"label": "Temperature"}, "zh": {"label": "温度"}},
    "top_p": {"en": {"label": "Top-p"}, "zh": {"label": "Top-p"}},
    "repetition_penalty": {"en": {"label": "Repetition penalty"}, "zh": {"label": "重复惩罚"}},
    "do_sample": {"en": {"label": "Sample (off: greedy)"}, "zh": {"label": "采样（关闭：贪心解码）"}},
    "gen_seed": {"en": {"label": "Seed (empty: random)"}, "zh": {"label": "随机种子（留空：随机）"}},
    # export
    "export_adapter": {"en": {"label": "Adapter"}, "zh": {"label": "适配器"}},
    "export_base": {
        "en": {"label": "Base model", "info": "Empty: the base the adapter was trained on"},
        "zh": {"label": "基座模型", "info": "留空：使用训练该适配器的基座模型"},
    },
    "export_dir": {
        "en": {"label": "Merged model folder", "info": "A new or empty folder"},
        "zh": {"label": "合并后模型目录", "info": "新的或空的文件夹"},
    },
    "export_dtype": {"en": {"label": "Dtype"}, "zh": {"label": "数据类型"}},
    "export_shard": {"en": {"label": "Max shard size"}, "zh": {"label": "最大分片大小"}},
    "export_device": {"en": {"label": "Device"}, "zh": {"label": "设备"}},
    "export_verify": {
        "en": {"label": "Verify", "info": "Reload the merged model and check it reproduces base + adapter"},
        "zh": {"label": "校验", "info": "重新加载合并后的模型，检查其输出与基座 + 适配器一致"},
    },
    "export_btn": {"en": {"value": "Merge and export"}, "zh": {"value": "合并并导出"}},
    "export_command": {"en": {"label": "Command"}, "zh": {"label": "命令"}},
    "export_result": {"en": {"label": "Result"}, "zh": {"label": "结果"}},
    "export_log": {"en": {"label": "Output"}, "zh": {"label": "输出"}},
    # runs
    "runs_root": {
        "en": {"label": "Folder", "info": "Runs are the training output folders in it"},
        "zh": {"label": "文件夹", "info": "其中的训练输出目录即为运行记录"},
    },
    "runs_refresh": {"en": {"value": "Refresh"}, "zh": {"value": "刷新"}},
    "runs_table": {"en": {"label": "Runs"}, "zh": {"label": "运行记录"}},
    "runs_pick": {"en": {"label": "Run"}, "zh": {"label": "运行"}},
    "runs_open": {"en": {"value": "Open in Train"}, "zh": {"value": "在训练页打开"}},
}

# Messages the UI writes itself (not the CLI's, which stay as the CLI prints them).
MESSAGES: dict[str, dict[str, str]] = {
    "status_none": {"en": "No run in {out} yet.", "zh": "{out} 中还没有运行。"},
    "status_running": {"en": "Running", "zh": "运行中"},
    "status_starting": {"en": "Starting", "zh": "正在启动"},
    "status_completed": {"en": "Completed", "zh": "已完成"},
    "status_interrupted": {"en": "Stopped (checkpoint saved)", "zh": "已停止（已保存检查点）"},
    "status_failed": {"en": "Failed", "zh": "失败"},
    "status_diverged": {"en": "Stopped: loss not finite", "zh": "已停止：损失不是有限值"},
    "status_died": {"en": "Died (process gone)", "zh": "进程已消失"},
    "status_unknown": {"en": "Unknown", "zh": "未知"},
    "step": {"en": "step", "zh": "步"},
    "elapsed": {"en": "elapsed", "zh": "已用"},
    "remaining": {"en": "remaining", "zh": "剩余"},
    "started": {"en": "Started: {cmd}", "zh": "已启动：{cmd}"},
    "abort_sent": {
        "en": "SIGTERM sent: the run finishes this update, saves a checkpoint and stops. Press again to kill it now.",
        "zh": "已发送 SIGTERM：完成当前更新、保存检查点后停止。再按一次立即终止。",
    },
    "kill_sent": {"en": "SIGKILL sent: the run was killed.", "zh": "已发送 SIGKILL：训练进程已被终止。"},
    "nothing_to_abort": {"en": "No run is going on in {out}.", "zh": "{out} 中没有正在进行的运行。"},
    "invalid": {
        "en": "Fix the fields marked in red; nothing was started.",
        "zh": "请修正标红的字段；未启动任何运行。",
    },
    "loaded": {"en": "Loaded {path}", "zh": "已加载 {path}"},
    "loaded_incomplete": {
        "en": "Loaded {path}; the CLI would still refuse it:",
        "zh": "已加载 {path}；命令行仍会拒绝它：",
    },
    "saved": {"en": "Saved {path}", "zh": "已保存 {path}"},
    "chat_loaded": {
        "en": "Loaded {what} on {device} ({dtype})",
        "zh": "已加载 {what}，设备 {device}（{dtype}）",
    },
    "chat_none": {"en": "No model loaded.", "zh": "尚未加载模型。"},
    "chat_need_adapter": {
        "en": "Side by side needs an adapter.",
        "zh": "并排对比需要适配器。",
    },
    "mode_adapter": {"en": "Adapter", "zh": "适配器"},
    "mode_base": {"en": "Base model", "zh": "基座模型"},
    "mode_compare": {"en": "Side by side", "zh": "并排对比"},
    "no_runs": {"en": "No runs under {root}.", "zh": "{root} 下没有运行记录。"},
    "col_run": {"en": "run", "zh": "运行"},
    "col_status": {"en": "status", "zh": "状态"},
    "col_step": {"en": "step", "zh": "步数"},
    "col_loss": {"en": "final loss", "zh": "最终损失"},
    "col_eval": {"en": "eval loss", "zh": "评估损失"},
    "col_updated": {"en": "updated", "zh": "更新时间"},
    "verified": {"en": "verified", "zh": "已校验"},
    # what the Train tab says next to the form (info.py)
    "info_demo": {
        "en": "**Bundled demo model** `{spec}`: built locally on first use, nothing is downloaded.",
        "zh": "**内置演示模型** `{spec}`：首次使用时在本地构建，无需下载。",
    },
    "info_local": {
        "en": "**Local folder** `{path}`: config.json and {n} weight file(s), {size}.",
        "zh": "**本地文件夹** `{path}`：config.json 和 {n} 个权重文件，共 {size}。",
    },
    "info_hub": {
        "en": "**{hub} hub** `{repo}` (hub chosen by: {why}).",
        "zh": "**{hub} 模型仓库** `{repo}`（仓库来源：{why}）。",
    },
    "info_cached": {
        "en": "In the local cache: `{folder}` (loads without network).",
        "zh": "已在本地缓存中：`{folder}`（无需网络即可加载）。",
    },
    "info_offline_cached": {
        "en": "Offline mode is on ({var}): the run loads it from the cache.",
        "zh": "离线模式已开启（{var}）：训练将从缓存加载。",
    },
    "info_offline_missing": {
        "en": "⚠ Not in the local cache and {var} forbids downloading: the run would stop. Pre-download it "
        "with `duotune download {spec}` where there is network.",
        "zh": "⚠ 本地缓存中没有，且 {var} 禁止下载：训练会停止。请在有网络的机器上用 "
        "`duotune download {spec}` 预先下载。",
    },
    "info_download": {
        "en": "Not in the local cache yet: it is downloaded from the {hub} hub when the run starts "
        "(or pre-fetch it with `duotune download {spec}`).",
        "zh": "本地缓存中还没有：开始训练时从 {hub} 下载（也可用 `duotune download {spec}` 预先下载）。",
    },
    "info_empty": {
        "en": "Give a model: a folder, a hub id or demo://tiny-llama.",
        "zh": "请填写模型：文件夹、仓库 ID 或 demo://tiny-llama。",
    },
    "info_plan": {
        "en": "**`device: {req}`** → {device} ({why}); precision {precision} ({pwhy}); attention {attn}; {framework} Trainer.",
        "zh": "**`device: {req}`** → {device}（{why}）；精度 {precision}（{pwhy}）；注意力 {attn}；{framework} Trainer。",
    },
    "info_data_row": {
        "en": "`{path}`: **{fmt}** ({how}), {rows} rows read, {used} used{skipped}",
        "zh": "`{path}`：**{fmt}**（{how}），读取 {rows} 行，使用 {used} 行{skipped}",
    },
    "info_detected": {"en": "detected", "zh": "自动识别"},
    "info_from_recipe": {"en": "from the recipe", "zh": "配方指定"},
    "info_skipped": {"en": ", {n} skipped", "zh": "，跳过 {n} 行"},
}


def plain(text: str) -> str:
    """Help text for a component's info line, which shows no markdown."""
    return text.replace("`", "")


def recipe_label(key: str, lang: str) -> str:
    entry = RECIPE.get(key)
    if entry is None:
        return key.replace("_", " ").capitalize()
    return entry[1] if lang == "zh" else entry[0]


def recipe_help(key: str, lang: str, english: str) -> str:
    """The help line of a recipe key: the dataclass's English, or its translation."""
    entry = RECIPE.get(key)
    if lang == "zh" and entry is not None:
        return plain(entry[2])
    return plain(english)


def ui_text(elem_id: str, lang: str, what: str = "label") -> str | None:
    entry = UI.get(elem_id, {})
    return entry.get(lang, entry.get("en", {})).get(what)


def message(name: str, lang: str, **kwargs) -> str:
    entry = MESSAGES[name]
    return entry.get(lang, entry["en"]).format(**kwargs)
