"""Every sentence the app shows people, in English and Chinese (zh-CN): one catalogue.

Two kinds of text, two paths:

- **Page text** (`PAGE`: labels, placeholders, buttons, tab names) is static: components get
  `i18n("consult.new")` and Gradio's frontend shows it in the page's language (`I18N`, passed to
  `gr.mount_gradio_app`; the language is chosen per request in `app.language`).
- **Server text** (`SERVER`: statuses, notes in the chat, the demo banner, the login message)
  and **error messages** are made on the server: `t("consult.open_first")` in the language of
  the request being handled (`app.language.speaking`, set by `Auth.guard`). Errors keep their
  English `user_message` as the source of truth; the edge translates it by looking it up here
  (`translate`: exact sentences, then templates such as "This {what} does not exist."), else by
  the error's class (`ERRORS`: each class's own `user_message` and its Chinese).

    t("consult.note.error", error="...")             # the current request's language
    translate("This consultation does not exist.", "zh-CN")   # '该会诊不存在。'

Page text must not hold `{` `}` (Gradio's frontend reads it as ICU message format). A new
sentence goes here with both languages; `tests/test_i18n.py` checks every entry.
"""

from __future__ import annotations

import re
from functools import cache

import gradio as gr

from app.language import DEFAULT_LANGUAGE, LANGUAGES, current_language, supported
from model.errors import (
    IntakeError,
    ModelDiedMidAnswer,
    ModelError,
    ModelRejectedInput,
    ModelTimeout,
    ModelUnreachable,
    PulseMindError,
)
from model.intake import errors as intake
from storage.errors import (
    Conflict,
    DatabaseBusy,
    DatabaseUnavailable,
    InvalidInput,
    NotFound,
    PermissionDenied,
    StorageError,
)

Entry = dict[str, str]

#: Static text of the page, translated by Gradio's frontend.
PAGE: dict[str, Entry] = {
    "app.logout": {"en": "Log out", "zh-CN": "退出登录"},
    "app.tab.consult": {"en": "Consult", "zh-CN": "会诊"},
    "consult.search": {"en": "Search titles", "zh-CN": "按标题搜索"},
    "consult.consultations": {"en": "Consultations", "zh-CN": "会诊记录"},
    "consult.delete": {"en": "Delete consultation", "zh-CN": "删除会诊"},
    "consult.new": {"en": "New consultation", "zh-CN": "新建会诊"},
    "consult.title": {"en": "Title", "zh-CN": "标题"},
    "consult.rename": {"en": "Rename", "zh-CN": "重命名"},
    "consult.title_info": {"en": "Press Enter to rename", "zh-CN": "按回车键重命名"},
    "consult.confirm_delete": {"en": "Confirm delete", "zh-CN": "确认删除"},
    "consult.cancel": {"en": "Cancel", "zh-CN": "取消"},
    "consult.model": {"en": "Model", "zh-CN": "模型"},
    "consult.report_text": {"en": "Report text", "zh-CN": "报告文本"},
    "consult.attachment": {"en": "Attachment", "zh-CN": "附件"},
    "consult.extracted_text": {"en": "Extracted text", "zh-CN": "提取的文本"},
    "consult.chat": {"en": "Consultation", "zh-CN": "会诊对话"},
    "consult.placeholder": {
        "en": "Describe the case; attach lab reports (PDF, photos), images, DICOM",
        "zh-CN": "请描述病例；可附上检验报告（PDF 或照片）、医学影像、DICOM 文件",
    },
    "consult.message": {"en": "Your message", "zh-CN": "您的消息"},
    "consult.stop": {"en": "Stop", "zh-CN": "停止"},
    "consult.retry": {"en": "Retry / regenerate", "zh-CN": "重试 / 重新生成"},
    "consult.answer": {"en": "Answer", "zh-CN": "回答"},
    "consult.version": {"en": "Version", "zh-CN": "版本"},
    "consult.comment": {"en": "Comment on this answer", "zh-CN": "对此回答的意见"},
    # clinician compare mode (app/consult_tab.py)
    "consult.compare.switch": {"en": "Compare two answers", "zh-CN": "对比两个回答"},
    "consult.compare.answer_a": {"en": "Answer A", "zh-CN": "回答 A"},
    "consult.compare.answer_b": {"en": "Answer B", "zh-CN": "回答 B"},
    "consult.compare.pick_a": {"en": "A is better", "zh-CN": "A 更好"},
    "consult.compare.pick_b": {"en": "B is better", "zh-CN": "B 更好"},
    "consult.compare.dimensions": {
        "en": "Rate the dimensions (optional)",
        "zh-CN": "分项评价（可选）",
    },
    "consult.compare.proactiveness": {"en": "Proactiveness", "zh-CN": "主动性"},
    "consult.compare.accuracy": {"en": "Accuracy", "zh-CN": "准确性"},
    "consult.compare.usefulness": {"en": "Usefulness", "zh-CN": "实用性"},
    "consult.compare.language_quality": {"en": "Language quality", "zh-CN": "语言质量"},
    # Benchmark tab (app/eval_tab.py)
    "eval.tab": {"en": "Benchmark", "zh-CN": "基准评测"},
    "eval.run": {"en": "Evaluation run", "zh-CN": "评测记录"},
    "eval.refresh": {"en": "Refresh", "zh-CN": "刷新"},
    "eval.plot": {"en": "Win rates", "zh-CN": "胜率"},
    "eval.csv": {"en": "Results (CSV)", "zh-CN": "结果（CSV）"},
    # Retrain tab (app/retrain_tab.py)
    "retrain.tab": {"en": "Retrain", "zh-CN": "再训练"},
    "retrain.kind": {"en": "Method", "zh-CN": "训练方法"},
    "retrain.base": {"en": "Base model variant", "zh-CN": "基础模型版本"},
    "retrain.data": {"en": "Training data", "zh-CN": "训练数据"},
    "retrain.steps": {"en": "Training steps", "zh-CN": "训练步数"},
    "retrain.judge_url": {"en": "Judge server URL", "zh-CN": "评判模型服务器地址"},
    "retrain.judge_model": {"en": "Judge model name", "zh-CN": "评判模型名称"},
    "retrain.generations": {
        "en": "Answers sampled per prompt (G)",
        "zh-CN": "每个问题采样的回答数（G）",
    },
    "retrain.counterparts": {
        "en": "Counterpart answers per sample (C)",
        "zh-CN": "每个回答的对照回答数（C）",
    },
    "retrain.start": {"en": "Start training", "zh-CN": "开始训练"},
    "retrain.runs": {"en": "Training runs", "zh-CN": "训练记录"},
    "retrain.run": {"en": "Run number", "zh-CN": "训练编号"},
    "retrain.resume": {"en": "Resume from the last checkpoint", "zh-CN": "从上一个检查点继续"},
    "retrain.curves": {"en": "Loss and reward", "zh-CN": "损失与奖励"},
    "retrain.learning_rate": {"en": "Learning rate", "zh-CN": "学习率"},
    # the Compare tab (app/compare_tab.py): annotators and admins
    "compare.tab": {"en": "Compare", "zh-CN": "对比评估"},
    "compare.unavailable": {
        "en": "### Compare is not available\n\nNo model variants are set up on this server. "
        "Ask an administrator to add two (`pulsemind variant add`).",
        "zh-CN": "### 对比评估暂不可用\n\n此服务器尚未配置模型版本。请联系管理员添加两个模型版本"
        "（`pulsemind variant add`）。",
    },
    "compare.intro": {
        "en": "Two models answer the same patient turn side by side. You do not know which is "
        "which until your vote is saved.",
        "zh-CN": "两个模型并排回答同一个患者提问。投票保存之前，您不会知道哪个回答来自哪个模型。",
    },
    "compare.from_case": {"en": "From a case set", "zh-CN": "从病例集选择"},
    "compare.from_typed": {"en": "Type a patient turn", "zh-CN": "自行输入患者提问"},
    "compare.from_log": {"en": "From a logged consultation", "zh-CN": "从会诊记录选择"},
    "compare.from_review": {"en": "Second opinion", "zh-CN": "复核"},
    "compare.review_info": {
        "en": "Judge a turn another annotator has already voted on: the same conversation and "
        "the same two answers, blind. Your vote shows how far annotators agree (Leaderboard).",
        "zh-CN": "评判另一位标注员已投票的对话轮次：相同的对话和相同的两个回答，匿名显示。"
        "您的投票用于衡量标注员之间的一致性（见排行榜）。",
    },
    "compare.review_start": {"en": "Show a turn to review", "zh-CN": "显示待复核的对话轮次"},
    "compare.log": {"en": "A clinician's question", "zh-CN": "医生的提问"},
    "compare.log_info": {
        "en": "The consultation up to this question is compared; who asked is not shown.",
        "zh-CN": "对比截至该提问的会诊内容；不显示提问者。",
    },
    "compare.case_set": {"en": "Case set", "zh-CN": "病例集"},
    "compare.case": {"en": "Case", "zh-CN": "病例"},
    "compare.turn": {"en": "Question (patient turn)", "zh-CN": "提问（患者轮次）"},
    "compare.typed": {"en": "Patient turn", "zh-CN": "患者提问"},
    "compare.typed_placeholder": {
        "en": "What the patient says; attach lab reports (PDF, photos), images, DICOM",
        "zh-CN": "患者的描述；可附上检验报告（PDF 或照片）、医学影像、DICOM 文件",
    },
    "compare.start": {"en": "Start comparison", "zh-CN": "开始对比"},
    "compare.context": {"en": "Conversation so far", "zh-CN": "目前的对话"},
    "compare.answer_a": {"en": "Answer A", "zh-CN": "回答 A"},
    "compare.heading_a": {"en": "#### Answer A", "zh-CN": "#### 回答 A"},
    "compare.heading_b": {"en": "#### Answer B", "zh-CN": "#### 回答 B"},
    "compare.answer_b": {"en": "Answer B", "zh-CN": "回答 B"},
    "compare.stop": {"en": "Stop", "zh-CN": "停止"},
    "compare.your_vote": {"en": "### Your vote", "zh-CN": "### 您的评价"},
    "compare.proactiveness": {"en": "Proactiveness", "zh-CN": "主动性"},
    "compare.proactiveness_info": {
        "en": "Asks for missing but clinically critical information",
        "zh-CN": "主动询问缺失但对临床判断关键的信息",
    },
    "compare.accuracy": {"en": "Accuracy", "zh-CN": "准确性"},
    "compare.accuracy_info": {
        "en": "Medically sound, no factual errors",
        "zh-CN": "医学内容正确，无事实性差错",
    },
    "compare.usefulness": {"en": "Usefulness", "zh-CN": "实用性"},
    "compare.usefulness_info": {"en": "Clear and actionable", "zh-CN": "清晰、可操作"},
    "compare.language_quality": {"en": "Language quality", "zh-CN": "语言质量"},
    "compare.language_quality_info": {
        "en": "Fluent, professional, understandable",
        "zh-CN": "流畅、专业、易于理解",
    },
    "compare.overall": {"en": "Overall", "zh-CN": "总体"},
    "compare.tie": {"en": "Tie", "zh-CN": "平局"},
    "compare.both_bad": {"en": "Both bad", "zh-CN": "两者都差"},
    "compare.safety_a": {"en": "Safety concern in answer A", "zh-CN": "回答 A 存在安全问题"},
    "compare.safety_b": {"en": "Safety concern in answer B", "zh-CN": "回答 B 存在安全问题"},
    "compare.comment": {"en": "Comment (optional)", "zh-CN": "评论（可选）"},
    "compare.vote": {"en": "Submit vote", "zh-CN": "提交评价"},
    "compare.keep": {
        "en": "Which answer does the conversation continue with?",
        "zh-CN": "对话继续使用哪个回答？",
    },
    "compare.next": {"en": "The patient's next turn", "zh-CN": "患者的下一轮提问"},
    "compare.next_placeholder": {
        "en": "What the patient says next; files may be attached",
        "zh-CN": "患者接下来说的话；可附文件",
    },
    "compare.continue": {"en": "Continue: both answer again", "zh-CN": "继续：两个模型再次回答"},
    # the Admin tab (app/admin_tab.py): admins only
    "admin.tab": {"en": "Admin", "zh-CN": "管理"},
    "admin.users": {"en": "### Users", "zh-CN": "### 用户"},
    "admin.users_table": {"en": "Users", "zh-CN": "用户列表"},
    "admin.refresh": {"en": "Refresh", "zh-CN": "刷新"},
    "admin.username": {"en": "Username", "zh-CN": "用户名"},
    "admin.role": {"en": "Role", "zh-CN": "角色"},
    "admin.role.clinician": {"en": "Clinician", "zh-CN": "临床医生"},
    "admin.role.annotator": {"en": "Annotator", "zh-CN": "标注员"},
    "admin.role.admin": {"en": "Administrator", "zh-CN": "管理员"},
    "admin.password": {"en": "Password (at least 12 characters)", "zh-CN": "密码（至少 12 个字符）"},
    "admin.add_user": {"en": "Add user", "zh-CN": "添加用户"},
    "admin.user": {"en": "User", "zh-CN": "用户"},
    "admin.disable": {"en": "Disable", "zh-CN": "停用"},
    "admin.enable": {"en": "Enable", "zh-CN": "启用"},
    "admin.new_password": {"en": "New password", "zh-CN": "新密码"},
    "admin.reset_password": {"en": "Reset password", "zh-CN": "重置密码"},
    "admin.variants": {"en": "### Model variants", "zh-CN": "### 模型版本"},
    "admin.variants_table": {"en": "Model variants", "zh-CN": "模型版本列表"},
    "admin.variant_name": {"en": "Variant name", "zh-CN": "模型版本名称"},
    "admin.endpoint": {
        "en": "Endpoint (http://host:8000/v1, or embedded)",
        "zh-CN": "服务地址（http://host:8000/v1，或 embedded）",
    },
    "admin.served_model": {
        "en": "Served model name (an adapter's LoRA name)",
        "zh-CN": "服务端模型名称（适配器即其 LoRA 名称）",
    },
    "admin.adapter": {
        "en": "LoRA adapter folder on the model server (optional)",
        "zh-CN": "模型服务器上的 LoRA 适配器目录（可选）",
    },
    "admin.parent": {"en": "Parent variant (optional)", "zh-CN": "父版本（可选）"},
    "admin.temperature": {"en": "Temperature", "zh-CN": "温度（temperature）"},
    "admin.top_p": {"en": "Top-p", "zh-CN": "核采样（top-p）"},
    "admin.max_tokens": {"en": "Max tokens", "zh-CN": "最大生成词元数"},
    "admin.seed": {"en": "Seed", "zh-CN": "随机种子"},
    "admin.notes": {"en": "Notes", "zh-CN": "备注"},
    "admin.add_variant": {"en": "Add variant", "zh-CN": "添加模型版本"},
    "admin.variant": {"en": "Variant", "zh-CN": "模型版本"},
    "admin.activate": {"en": "Activate", "zh-CN": "启用"},
    "admin.deactivate": {"en": "Deactivate", "zh-CN": "停用"},
    "admin.exports": {"en": "### Training data exports", "zh-CN": "### 导出训练数据"},
    "admin.kind": {"en": "Kind", "zh-CN": "类型"},
    "admin.kind.sft": {
        "en": "SFT: preferred answers in context",
        "zh-CN": "SFT：对话上下文中的优选回答",
    },
    "admin.kind.pairs": {
        "en": "Pairs: chosen and rejected answers",
        "zh-CN": "偏好对：优选与落选回答",
    },
    "admin.kind.crpo": {
        "en": "CRPO: prompts with counterpart answers",
        "zh-CN": "CRPO：提示及对照模型回答",
    },
    "admin.include_flagged": {
        "en": "Include safety-flagged votes",
        "zh-CN": "包含被标记安全问题的投票",
    },
    "admin.export": {"en": "Export", "zh-CN": "导出"},
    "admin.download": {"en": "Dataset (.zip)", "zh-CN": "数据集（.zip）"},
    # the Leaderboard tab (app/leaderboard_tab.py): admins and annotators
    "leaderboard.tab": {"en": "Leaderboard", "zh-CN": "排行榜"},
    "leaderboard.intro": {
        "en": "Bradley–Terry ratings of the model variants from the votes (ties count half a "
        "win each way), with 95% bootstrap intervals; beside them a fit that controls for "
        "answer length and markdown, so a variant cannot win by writing longer.",
        "zh-CN": "根据投票计算的各模型版本 Bradley–Terry 评分（平局双方各计半胜），附 95% "
        "自助法置信区间；旁边是控制回答长度和 Markdown 格式后的评分，模型无法靠写得更长取胜。",
    },
    "leaderboard.refresh": {"en": "Refresh", "zh-CN": "刷新"},
    "leaderboard.win_field": {"en": "Win rates on", "zh-CN": "胜率维度"},
    "leaderboard.field.overall": {"en": "Overall", "zh-CN": "总体"},
    "leaderboard.field.proactiveness": {"en": "Proactiveness", "zh-CN": "主动性"},
    "leaderboard.field.accuracy": {"en": "Accuracy", "zh-CN": "准确性"},
    "leaderboard.field.usefulness": {"en": "Usefulness", "zh-CN": "实用性"},
    "leaderboard.field.language_quality": {"en": "Language quality", "zh-CN": "语言质量"},
    "leaderboard.raw_plot": {"en": "Ratings (raw)", "zh-CN": "评分（原始）"},
    "leaderboard.style_plot": {"en": "Ratings (style-controlled)", "zh-CN": "评分（控制风格后）"},
    "leaderboard.ratings": {
        "en": "Ratings: raw and style-controlled",
        "zh-CN": "评分：原始与控制风格后",
    },
    "leaderboard.win_plot": {"en": "Win-rate matrix", "zh-CN": "胜率矩阵"},
    "leaderboard.win_table": {"en": "Win rates (row beats column)", "zh-CN": "胜率（行胜列）"},
    "leaderboard.annotators": {"en": "Votes per annotator", "zh-CN": "各标注员投票数"},
    "leaderboard.agreement": {
        "en": "Agreement on double-annotated turns",
        "zh-CN": "多人标注轮次的一致率",
    },
    "leaderboard.flags": {"en": "Quality flags", "zh-CN": "质量标记"},
    "leaderboard.csv": {"en": "Tables as CSV", "zh-CN": "表格（CSV）"},
    # Gradio's screen-reader status line asks for this key; its own catalogue lacks it (6.31)
    "common.complete": {"en": "Done", "zh-CN": "已完成"},
    # the image viewer (app/viewer.py)
    "viewer.title": {"en": "Image viewer", "zh-CN": "影像查看器"},
    "viewer.open": {"en": "Open in the viewer", "zh-CN": "在查看器中打开"},
    "viewer.image": {"en": "Image", "zh-CN": "图像"},
    "viewer.second": {"en": "Second image, side by side", "zh-CN": "第二幅图像（并排对比）"},
    "viewer.preset": {"en": "Window", "zh-CN": "窗宽窗位"},
    "viewer.preset.own": {"en": "As stored", "zh-CN": "原始窗"},
    "viewer.preset.soft_tissue": {"en": "Soft tissue", "zh-CN": "软组织窗"},
    "viewer.preset.lung": {"en": "Lung", "zh-CN": "肺窗"},
    "viewer.preset.bone": {"en": "Bone", "zh-CN": "骨窗"},
    "viewer.preset.brain": {"en": "Brain", "zh-CN": "脑窗"},
    "viewer.preset.full": {"en": "Full range", "zh-CN": "全范围"},
}

#: Text the server writes into the page or a message, in the request's language.
SERVER: dict[str, Entry] = {
    "app.logged_in_as": {"en": "Logged in as **{name}**", "zh-CN": "当前用户：**{name}**"},
    "login.message": {
        "en": "PulseMind — log in with your account.",
        "zh-CN": "PulseMind —— 请使用您的账户登录。",
    },
    "login.first_admin": {
        "en": "No users exist yet. Create the first admin with:",
        "zh-CN": "尚无任何用户。请用以下命令创建第一个管理员：",
    },
    "consult.demo_banner": {
        "en": "⚠️ **Demo model** — answers are random text, not for patient care.",
        "zh-CN": "⚠️ **演示模型** —— 回答是随机生成的文本，不可用于患者诊疗。",
    },
    "consult.demo_hint": {
        "en": "For operators: start the app with `--model-url` to use a real model.",
        "zh-CN": "运维提示：启动时加上 `--model-url` 参数即可使用真实模型。",
    },
    "consult.note.cut_off": {
        "en": "⚠️ *The answer was cut off: {error} Press **Retry** to ask again.*",
        "zh-CN": "⚠️ *回答被中断：{error} 请点击 **重试** 重新提问。*",
    },
    "consult.note.error": {
        "en": "⚠️ *{error} Press **Retry** to ask again.*",
        "zh-CN": "⚠️ *{error} 请点击 **重试** 重新提问。*",
    },
    "consult.note.cancelled": {"en": "*(stopped)*", "zh-CN": "*（已停止）*"},
    "consult.note.length": {
        "en": "cut off at the length limit",
        "zh-CN": "已达长度上限",
    },
    "consult.answer_meta": {"en": "{variant} · {seconds} s", "zh-CN": "{variant} · 用时 {seconds} 秒"},
    "consult.upload_fix": {
        "en": "Remove the file(s) named above (× on the file) and attach PNG, JPEG, WebP, TIFF, "
        "DICOM or PDF files; your message and the other files are still here.",
        "zh-CN": "请移除上面列出的文件（点击文件上的 ×），并附加 PNG、JPEG、WebP、TIFF、DICOM 或 "
        "PDF 文件；您的消息和其他文件仍保留在这里。",
    },
    "consult.delete_question": {
        "en": "Delete “{title}”? It leaves your list.",
        "zh-CN": "删除“{title}”？它将从您的列表中移除。",
    },
    "consult.deleted": {"en": "Deleted “{title}”.", "zh-CN": "已删除“{title}”。"},
    "consult.status.failed": {"en": "⚠️ {error}", "zh-CN": "⚠️ {error}"},
    "consult.did_not_finish": {"en": "The answer did not finish.", "zh-CN": "回答未能完成。"},
    "consult.open_first": {"en": "Open a consultation first.", "zh-CN": "请先打开一个会诊。"},
    "consult.compare.picked": {
        "en": "You picked answer {side}: the consultation continues with it. Answer A was "
        "written by {a}, answer B by {b}.",
        "zh-CN": "您选择了回答 {side}，会诊将以它继续。回答 A 来自 {a}，回答 B 来自 {b}。",
    },
    "consult.compare.unpickable": {
        "en": "An answer did not finish, so this pair cannot be picked. Press Retry for a "
        "single answer to your message.",
        "zh-CN": "有一个回答未能完成，无法在这一对中选择。请点击“重试”获取对您消息的单个回答。",
    },
    "eval.none": {
        "en": "No evaluation yet: run `pulsemind eval run` or `pulsemind eval agreement`.",
        "zh-CN": "暂无评测：请运行 `pulsemind eval run` 或 `pulsemind eval agreement`。",
    },
    "eval.kind.benchmark": {"en": "benchmark", "zh-CN": "基准评测"},
    "eval.kind.agreement": {"en": "judge–clinician agreement", "zh-CN": "评判与医生一致性"},
    "retrain.data.since_last": {
        "en": "Everything logged since the last run",
        "zh-CN": "上次训练以来记录的全部数据",
    },
    "retrain.column.id": {"en": "run", "zh-CN": "编号"},
    "retrain.column.kind": {"en": "method", "zh-CN": "方法"},
    "retrain.column.base": {"en": "base", "zh-CN": "基础模型"},
    "retrain.column.status": {"en": "status", "zh-CN": "状态"},
    "retrain.column.step": {"en": "step", "zh-CN": "步数"},
    "retrain.column.started": {"en": "started", "zh-CN": "开始时间"},
    "retrain.column.variant": {"en": "new variant", "zh-CN": "新模型版本"},
    "retrain.column.error": {"en": "error", "zh-CN": "错误"},
    "retrain.status.queued": {"en": "queued", "zh-CN": "排队中"},
    "retrain.status.running": {"en": "running", "zh-CN": "训练中"},
    "retrain.status.succeeded": {"en": "succeeded", "zh-CN": "已完成"},
    "retrain.status.failed": {"en": "failed", "zh-CN": "失败"},
    "retrain.status.interrupted": {"en": "interrupted", "zh-CN": "已中断"},
    "retrain.started": {
        "en": "Run {id} started. It keeps running if you close this page.",
        "zh-CN": "训练 {id} 已开始，关闭此页面也会继续运行。",
    },
    "retrain.resumed": {
        "en": "Run {id} resumed from its last checkpoint.",
        "zh-CN": "训练 {id} 已从上一个检查点继续。",
    },
    "retrain.progress": {
        "en": "Step {step} of {total} · {status}",
        "zh-CN": "第 {step} 步，共 {total} 步 · {status}",
    },
    "retrain.registered": {
        "en": "The new adapter is registered as variant {name} and is now compared against "
        "its base in Compare.",
        "zh-CN": "新的适配器已注册为模型版本 {name}，现已在对比中与其基础模型进行比较。",
    },
    "consult.compare.streaming": {
        "en": "Two models are answering; pick the better answer when both are done.",
        "zh-CN": "两个模型正在回答，两者都完成后请选择更好的回答。",
    },
    "consult.attachment_choice": {
        "en": "{name} (message {seq})",
        "zh-CN": "{name}（第 {seq} 条消息）",
    },
    # attachment cards in the chat (app/attachment_cards.py)
    "card.kind.image": {"en": "image", "zh-CN": "图像"},
    "card.kind.dicom": {"en": "DICOM image", "zh-CN": "DICOM 影像"},
    "card.kind.pdf": {"en": "PDF document", "zh-CN": "PDF 文档"},
    "card.deid.no": {"en": "Not de-identified", "zh-CN": "未去标识化"},
    "card.deid.dicom": {
        "en": "De-identified: {replaced} header fields replaced, {removed} removed, "
        "{private} private tags removed",
        "zh-CN": "已去标识化：替换 {replaced} 个头字段，删除 {removed} 个，删除私有标签 {private} 个",
    },
    "card.deid.pdf": {
        "en": "De-identified: identifiers removed from the text ({counts})",
        "zh-CN": "已去标识化：已从文本中删除身份信息（{counts}）",
    },
    "card.deid.pdf_none": {
        "en": "De-identified: no identifiers found in the text",
        "zh-CN": "已去标识化：文本中未发现身份信息",
    },
    "card.deid.image": {
        "en": "De-identified: metadata removed ({fields}); only the pixels are kept",
        "zh-CN": "已去标识化：已删除元数据（{fields}），只保留像素",
    },
    "card.deid.image_none": {
        "en": "De-identified: no metadata found; only the pixels are kept",
        "zh-CN": "已去标识化：未发现元数据，只保留像素",
    },
    "card.masked": {
        "en": "{n} text region(s) in the pixels blacked out",
        "zh-CN": "图像中 {n} 处文字已涂黑",
    },
    "card.frames": {"en": "{kept} of {total} frames sent", "zh-CN": "已发送 {total} 帧中的 {kept} 帧"},
    "card.pages": {
        "en": "{rendered} of {total} pages rendered as images",
        "zh-CN": "已将 {total} 页中的 {rendered} 页渲染为图像",
    },
    "card.text": {"en": "Text extracted: {chars} characters", "zh-CN": "已提取文本：{chars} 个字符"},
    "card.fields": {"en": "Header fields removed or replaced", "zh-CN": "已删除或替换的头字段"},
    "card.burned_in": {
        "en": "Burned-in text: this image carries text in its pixels, where names and numbers "
        "are often printed. Identifying text found by OCR was blacked out; check the image "
        "before relying on it, and if identifying text remains, upload an anonymised export.",
        "zh-CN": "烧录文字：此图像的像素中带有文字，常印有姓名和编号。OCR 发现的身份信息已涂黑；"
        "使用前请检查图像，如仍有身份信息，请上传匿名导出的版本。",
    },
    # the image viewer (app/viewer.py)
    "viewer.zoom_in": {"en": "Zoom in", "zh-CN": "放大"},
    "viewer.zoom_out": {"en": "Zoom out", "zh-CN": "缩小"},
    "viewer.reset": {"en": "Reset zoom", "zh-CN": "重置缩放"},
    "viewer.previous": {"en": "Previous frame", "zh-CN": "上一帧"},
    "viewer.next": {"en": "Next frame", "zh-CN": "下一帧"},
    "viewer.play": {"en": "Play / pause", "zh-CN": "播放 / 暂停"},
    "viewer.empty": {
        "en": "Pick an image of this consultation to view it here.",
        "zh-CN": "请选择本次会诊中的一幅图像在此查看。",
    },
    "viewer.stored": {
        "en": "Shown as stored: window presets need CT values (Hounsfield units).",
        "zh-CN": "按原样显示：窗宽窗位预设需要 CT 值（亨氏单位）。",
    },
    "viewer.no_values": {
        "en": "Shown as stored: only greyscale DICOM without burned-in text can be re-windowed.",
        "zh-CN": "按原样显示：只有不含烧录文字的灰度 DICOM 图像才能重新调窗。",
    },
    "viewer.choice": {"en": "{name} · {kind} (message {seq})", "zh-CN": "{name} · {kind}（第 {seq} 条消息）"},
    # the Compare tab (app/compare_tab.py)
    "compare.need_two": {
        "en": "⚠️ Compare needs two active model variants; ask an administrator to add one.",
        "zh-CN": "⚠️ 对比评估需要两个已启用的模型版本，请联系管理员添加。",
    },
    "compare.no_cases": {
        "en": "No case set is loaded yet; type a patient turn instead, or ask an administrator "
        "to load one (`pulsemind cases load FILE`).",
        "zh-CN": "尚未导入任何病例集；您可以自行输入患者提问，或请管理员导入病例集"
        "（`pulsemind cases load FILE`）。",
    },
    "compare.case_choice": {"en": "{n}. {title}", "zh-CN": "{n}. {title}"},
    "compare.turn_choice": {"en": "Turn {n}", "zh-CN": "第 {n} 轮"},
    "compare.log_choice": {
        "en": "Consultation #{cid} · question {turn} · {day} · {preview}",
        "zh-CN": "会诊 #{cid} · 第 {turn} 个提问 · {day} · {preview}",
    },
    "compare.earlier": {"en": "Earlier answer", "zh-CN": "此前的回答"},
    "compare.pick_log": {
        "en": "Choose a question from the log first.",
        "zh-CN": "请先从会诊记录中选择一个提问。",
    },
    "compare.patient": {"en": "Patient", "zh-CN": "患者"},
    "compare.reference": {"en": "Reference doctor", "zh-CN": "参考医生"},
    "compare.kept": {"en": "Kept answer", "zh-CN": "保留的回答"},
    "compare.question": {
        "en": "the question both models answer",
        "zh-CN": "两个模型都要回答的问题",
    },
    "compare.reference_note": {
        "en": "Reference doctor's answer to this turn (the models do not see it):",
        "zh-CN": "参考医生对本轮的回答（模型看不到）：",
    },
    "compare.attachment": {"en": "Attachment {n} ({kind})", "zh-CN": "附件 {n}（{kind}）"},
    "compare.kind.image": {"en": "image", "zh-CN": "图像"},
    "compare.kind.dicom": {"en": "DICOM", "zh-CN": "DICOM 影像"},
    "compare.kind.pdf": {"en": "PDF", "zh-CN": "PDF 文件"},
    "compare.answering": {
        "en": "Both answers are being written…",
        "zh-CN": "两个回答正在生成……",
    },
    "compare.locked": {
        "en": "🔒 The vote unlocks when both answers have finished.",
        "zh-CN": "🔒 两个回答都完成后才能投票。",
    },
    "compare.side.cut_off": {
        "en": "Answer {side} was cut off: {error}",
        "zh-CN": "回答 {side} 被中断：{error}",
    },
    "compare.side.error": {"en": "Answer {side} failed: {error}", "zh-CN": "回答 {side} 失败：{error}"},
    "compare.side.cancelled": {"en": "Answer {side} was stopped.", "zh-CN": "回答 {side} 已停止。"},
    "compare.not_votable": {
        "en": "🔒 {why} This pair cannot be voted on; start a new comparison.",
        "zh-CN": "🔒 {why} 这一对回答无法投票，请开始新的对比。",
    },
    "compare.stopped": {
        "en": "🔒 Stopped: this pair cannot be voted on; start a new comparison.",
        "zh-CN": "🔒 已停止：这一对回答无法投票，请开始新的对比。",
    },
    "compare.ready": {
        "en": "Both answers are complete: read them, then vote.",
        "zh-CN": "两个回答都已完成，请阅读后投票。",
    },
    "compare.saved": {"en": "✅ Saved.", "zh-CN": "✅ 已保存。"},
    "compare.reveal": {
        "en": "Answer A was written by **{a}**, answer B by **{b}**.",
        "zh-CN": "回答 A 来自 **{a}**，回答 B 来自 **{b}**。",
    },
    "compare.choose_kept": {
        "en": "Neither answer won overall: choose the one the conversation continues with, "
        "then continue.",
        "zh-CN": "总体上没有更好的回答：请选择对话继续使用的回答，然后继续。",
    },
    "compare.start_first": {"en": "Start a comparison first.", "zh-CN": "请先开始一次对比。"},
    "compare.pick_case": {"en": "Choose a case first.", "zh-CN": "请先选择一个病例。"},
    "compare.failed": {"en": "⚠️ {error}", "zh-CN": "⚠️ {error}"},
    "compare.review_none": {"en": "Nothing to review yet.", "zh-CN": "暂无待复核的对话轮次。"},
    "compare.review_ready": {
        "en": "Second opinion: both answers as they were written. Read them, then vote.",
        "zh-CN": "复核：两个回答均为当时生成的原文。请阅读后投票。",
    },
    "compare.review_no_continue": {
        "en": "A second opinion ends with your vote; the conversation is continued only by "
        "whoever started it.",
        "zh-CN": "复核在您投票后即结束；只有发起该对比的人才能继续对话。",
    },
    # app/edge.py, app/auth.py
    "edge.bad_value": {
        "en": "A value sent is not one this field accepts (for a choice, one of the options "
        "offered; for a number, digits). Nothing was changed.",
        "zh-CN": "提交的某个值不是该字段可接受的值（选项须从给定选项中选择，数字须为数字）。"
        "未做任何更改。",
    },
    "edge.generic": {
        "en": "Something went wrong on the server (reference {ref}). What you saved before is "
        "kept; try again, and give the reference to your administrator if it happens again.",
        "zh-CN": "服务器出现异常（参考编号 {ref}）。您之前保存的内容都还在；请重试，"
        "如果再次出现，请将参考编号告知管理员。",
    },
    "edge.error_title": {"en": "Error", "zh-CN": "错误"},
    "edge.not_exist": {"en": "This {what} does not exist.", "zh-CN": "该{what}不存在。"},
    "auth.denied": {"en": "You are not allowed to do this.", "zh-CN": "您无权执行此操作。"},
    "auth.log_in": {"en": "Please log in.", "zh-CN": "请先登录。"},
    "auth.role_cannot": {
        "en": "Your role ({role}) cannot {action}.",
        "zh-CN": "您的角色（{role}）无权执行此操作。",
    },
    # app/request_guard.py, app/server.py
    "guard.not_uploaded": {
        "en": "Attach files by uploading them here first.",
        "zh-CN": "请先在本页上传文件，再将其作为附件发送。",
    },
    "guard.not_found": {"en": "Not found.", "zh-CN": "未找到。"},
    "guard.too_large": {"en": "This request is too large.", "zh-CN": "请求内容过大。"},
    # app/workflow.py, app/consult_api.py, storage/ (specific user_message= texts)
    "flow.empty_turn": {
        "en": "Type a message or attach a file.",
        "zh-CN": "请输入内容或添加附件。",
    },
    "flow.no_question": {
        "en": "There is no question to answer yet.",
        "zh-CN": "目前还没有需要回答的问题。",
    },
    "flow.already_answered": {
        "en": "The last message already has an answer; regenerate it instead.",
        "zh-CN": "最后一条消息已有回答；如需新的回答，请重新生成。",
    },
    "flow.upload_rejected": {
        "en": "Some files could not be used.",
        "zh-CN": "部分文件无法使用。",
    },
    "flow.no_variant": {"en": "No model variant is active.", "zh-CN": "当前没有可用的模型。"},
    "flow.unknown_variant": {
        "en": "No active model variant named {name}.",
        "zh-CN": "没有名为 {name} 的可用模型。",
    },
    "api.malformed": {
        "en": 'The message must be {"text": "...", "files": [uploaded files]}.',
        "zh-CN": '消息格式应为 {"text": "...", "files": [已上传的文件]}。',
    },
    # app/compare_api.py
    "api.compare_source": {
        "en": "Give one of: a message, a case id, a comparison turn id to continue (with a "
        "message), your consultation id, or a logged consultation id with the id of its "
        "question.",
        "zh-CN": "请只提供以下其中一项：一条消息、一个病例编号、要继续的对比轮次编号（附消息）、"
        "您自己的会诊编号，或已记录会诊的编号及其问题编号。",
    },
    "api.bad_vote": {
        "en": "The vote must map proactiveness, accuracy, usefulness, language_quality and "
        "overall to a, b or tie (overall also both_bad); safety_flag_a and safety_flag_b "
        "are true or false; comment is text.",
        "zh-CN": "投票须为 proactiveness、accuracy、usefulness、language_quality 和 overall "
        "各选 a、b 或 tie（overall 还可选 both_bad）；safety_flag_a 和 safety_flag_b 为 true "
        "或 false；comment 为文本。",
    },
    "api.bad_side": {
        "en": 'The side must be "a" or "b".',
        "zh-CN": '回答一侧须为 "a" 或 "b"。',
    },
    "storage.too_many_files": {
        "en": "At most {n} files per message.",
        "zh-CN": "每条消息最多可附 {n} 个文件。",
    },
    "storage.empty": {"en": "The {field} must not be empty.", "zh-CN": "{field}不能为空。"},
    "storage.too_long": {
        "en": "The {field} is too long (at most {n} characters).",
        "zh-CN": "{field}过长（最多 {n} 个字符）。",
    },
    "storage.invalid": {"en": "Invalid {field}.", "zh-CN": "{field}无效。"},
    "storage.username_taken": {"en": "This username is taken.", "zh-CN": "该用户名已被占用。"},
    "storage.password_short": {
        "en": "The password must have at least {n} characters.",
        "zh-CN": "密码至少需要 {n} 个字符。",
    },
    "storage.password_long": {
        "en": "The password must have at most {n} characters.",
        "zh-CN": "密码最多 {n} 个字符。",
    },
    # app/admin_tab.py
    "admin.col.username": {"en": "Username", "zh-CN": "用户名"},
    "admin.col.role": {"en": "Role", "zh-CN": "角色"},
    "admin.col.active": {"en": "Active", "zh-CN": "启用"},
    "admin.col.created": {"en": "Created", "zh-CN": "创建时间"},
    "admin.col.name": {"en": "Name", "zh-CN": "名称"},
    "admin.col.endpoint": {"en": "Endpoint", "zh-CN": "服务地址"},
    "admin.col.served_model": {"en": "Served model", "zh-CN": "服务端模型"},
    "admin.col.adapter": {"en": "Adapter", "zh-CN": "适配器"},
    "admin.col.parent": {"en": "Parent", "zh-CN": "父版本"},
    "admin.col.sampling": {"en": "Sampling", "zh-CN": "采样参数"},
    "admin.col.notes": {"en": "Notes", "zh-CN": "备注"},
    "admin.yes": {"en": "yes", "zh-CN": "是"},
    "admin.no": {"en": "no", "zh-CN": "否"},
    "admin.user_added": {
        "en": "✅ User {name} ({role}) added: they can log in now.",
        "zh-CN": "✅ 已添加用户 {name}（{role}），现在即可登录。",
    },
    "admin.user_disabled": {
        "en": "✅ User {name} is disabled: they can no longer log in.",
        "zh-CN": "✅ 已停用用户 {name}，该用户无法再登录。",
    },
    "admin.user_enabled": {
        "en": "✅ User {name} is enabled: they can log in again.",
        "zh-CN": "✅ 已启用用户 {name}，该用户可以再次登录。",
    },
    "admin.password_reset": {
        "en": "✅ The password of {name} is reset; give them the new one in person.",
        "zh-CN": "✅ 已重置 {name} 的密码；请当面告知新密码。",
    },
    "admin.no_user": {"en": "There is no user named {name}.", "zh-CN": "没有名为 {name} 的用户。"},
    "admin.pick_user": {"en": "Choose a user first.", "zh-CN": "请先选择一个用户。"},
    "admin.bad_role": {
        "en": "Choose a role: clinician, annotator or admin.",
        "zh-CN": "请选择角色：临床医生（clinician）、标注员（annotator）或管理员（admin）。",
    },
    "admin.not_yourself": {
        "en": "You cannot disable your own account; ask another administrator.",
        "zh-CN": "不能停用自己的账户；请让其他管理员操作。",
    },
    "admin.last_admin": {
        "en": "At least one active administrator must remain; enable or add another first.",
        "zh-CN": "必须保留至少一名启用中的管理员；请先启用或添加另一名管理员。",
    },
    "admin.bad_flag": {
        "en": "The {field} value must be true or false.",
        "zh-CN": "{field} 的值必须是 true 或 false。",
    },
    "admin.bad_number": {
        "en": "{field} must be a number between {low} and {high}.",
        "zh-CN": "{field} 必须是介于 {low} 和 {high} 之间的数字。",
    },
    "admin.bad_text": {
        "en": "{field} must be text of at most {n} characters.",
        "zh-CN": "{field} 必须是不超过 {n} 个字符的文本。",
    },
    "admin.variant_added": {
        "en": "✅ Variant {name} added and active.",
        "zh-CN": "✅ 已添加并启用模型版本 {name}。",
    },
    "admin.variant_added_adapter": {
        "en": "✅ Variant {name} added and active; the server serves its adapter as {served}.",
        "zh-CN": "✅ 已添加并启用模型版本 {name}；模型服务器以 {served} 名称提供其适配器。",
    },
    "admin.variant_active": {
        "en": "✅ Variant {name} is active: Consult and Compare offer it.",
        "zh-CN": "✅ 模型版本 {name} 已启用：会诊和对比评估中可用。",
    },
    "admin.variant_inactive": {
        "en": "✅ Variant {name} is inactive: kept for its votes, no longer offered.",
        "zh-CN": "✅ 模型版本 {name} 已停用：其投票记录保留，不再提供使用。",
    },
    "admin.pick_variant": {"en": "Choose a variant first.", "zh-CN": "请先选择一个模型版本。"},
    "admin.adapter_refused": {
        "en": "The model server did not load the adapter: check that the folder exists on the "
        "server's machine and holds a LoRA adapter for its base model. Nothing was registered.",
        "zh-CN": "模型服务器未能加载该适配器：请确认该目录在模型服务器所在机器上存在，且是其基座模型的 "
        "LoRA 适配器。未登记任何内容。",
    },
    "admin.bad_kind": {
        "en": "Choose a kind: sft, pairs or crpo.",
        "zh-CN": "请选择类型：sft、pairs 或 crpo。",
    },
    "admin.exported": {
        "en": "✅ Exported {rows} {kind} rows to {folder} on the server; the .zip is below.",
        "zh-CN": "✅ 已导出 {rows} 行 {kind} 数据到服务器上的 {folder}；下方可下载 .zip。",
    },
    "admin.nothing_to_export": {
        "en": "Nothing to export: there are no {kind} rows yet{flagged}.",
        "zh-CN": "没有可导出的内容：目前还没有 {kind} 数据{flagged}。",
    },
    "admin.flagged_left_out": {
        "en": " (safety-flagged votes are left out unless included)",
        "zh-CN": "（未勾选时不包含被标记安全问题的投票）",
    },
    # app/leaderboard_tab.py
    "leaderboard.empty": {
        "en": "### No votes yet\n\nRatings appear here once annotators have voted in Compare.",
        "zh-CN": "### 暂无投票\n\n标注员在对比评估中投票后，评分会显示在这里。",
    },
    "leaderboard.summary": {
        "en": "{votes} votes on {variants} variants; {flags} quality flags.",
        "zh-CN": "共 {votes} 票，涉及 {variants} 个模型版本；{flags} 个质量标记。",
    },
    "leaderboard.summary_annotator": {
        "en": "{votes} votes on {variants} variants. Per-annotator figures are for "
        "administrators.",
        "zh-CN": "共 {votes} 票，涉及 {variants} 个模型版本。各标注员的数据仅管理员可见。",
    },
    "leaderboard.not_rated": {
        "en": "Could not rate the votes: {reason}",
        "zh-CN": "无法根据投票计算评分：{reason}",
    },
    "leaderboard.bad_field": {
        "en": "Choose one of: overall, proactiveness, accuracy, usefulness, language_quality.",
        "zh-CN": "请选择其一：overall、proactiveness、accuracy、usefulness、language_quality。",
    },
    "leaderboard.col.field": {"en": "Field", "zh-CN": "维度"},
    "leaderboard.col.rank": {"en": "Rank", "zh-CN": "名次"},
    "leaderboard.col.variant": {"en": "Variant", "zh-CN": "模型版本"},
    "leaderboard.col.rating": {"en": "Rating", "zh-CN": "评分"},
    "leaderboard.col.lower": {"en": "Lower 95%", "zh-CN": "95% 下限"},
    "leaderboard.col.upper": {"en": "Upper 95%", "zh-CN": "95% 上限"},
    "leaderboard.col.style_rating": {"en": "Style-controlled", "zh-CN": "控制风格后评分"},
    "leaderboard.col.style_lower": {"en": "Style lower 95%", "zh-CN": "控制风格 95% 下限"},
    "leaderboard.col.style_upper": {"en": "Style upper 95%", "zh-CN": "控制风格 95% 上限"},
    "leaderboard.col.votes": {"en": "Votes", "zh-CN": "票数"},
    "leaderboard.col.annotator": {"en": "Annotator", "zh-CN": "标注员"},
    "leaderboard.col.overall_a": {"en": "A better", "zh-CN": "A 更好"},
    "leaderboard.col.overall_b": {"en": "B better", "zh-CN": "B 更好"},
    "leaderboard.col.overall_tie": {"en": "Tie", "zh-CN": "平局"},
    "leaderboard.col.overall_both_bad": {"en": "Both bad", "zh-CN": "两者都差"},
    "leaderboard.col.flagged": {"en": "Flagged", "zh-CN": "被标记"},
    "leaderboard.col.turns": {"en": "Turns", "zh-CN": "轮次数"},
    "leaderboard.col.pairs": {"en": "Pairs of votes", "zh-CN": "投票对数"},
    "leaderboard.col.agreement": {"en": "Agreement", "zh-CN": "一致率"},
    "leaderboard.col.vote": {"en": "Vote", "zh-CN": "投票"},
    "leaderboard.col.turn": {"en": "Turn", "zh-CN": "轮次"},
    "leaderboard.col.reason": {"en": "Reason", "zh-CN": "原因"},
    "leaderboard.col.detail": {"en": "Detail", "zh-CN": "详情"},
    "leaderboard.col.win_rate": {"en": "Win rate", "zh-CN": "胜率"},
    "leaderboard.col.games": {"en": "Votes between them", "zh-CN": "二者之间的票数"},
    "leaderboard.col.opponent": {"en": "Against", "zh-CN": "对手"},
    "leaderboard.col.fit": {"en": "Fit", "zh-CN": "拟合"},
    "leaderboard.fit.raw": {"en": "raw", "zh-CN": "原始"},
    "leaderboard.fit.style": {"en": "style-controlled", "zh-CN": "控制风格后"},
    "leaderboard.reason.too_fast": {"en": "too fast to have read", "zh-CN": "用时过短，不足以读完"},
    "leaderboard.reason.names_model": {"en": "an answer names a model", "zh-CN": "回答中提到了模型名称"},
    "leaderboard.reason.daily_cap": {"en": "past the daily cap", "zh-CN": "超过每日上限"},
}

#: The Chinese of each error class's `user_message` (its English is the class's own text).
ERRORS: dict[type[PulseMindError], str] = {
    PulseMindError: "出现了问题。",
    StorageError: "数据库无法完成此请求。",
    NotFound: "该内容不存在（或已被删除）。",
    PermissionDenied: "您无权访问此内容。",
    Conflict: "该内容已存在。",
    InvalidInput: "部分输入无效。",
    DatabaseBusy: "数据库正忙，没有任何内容丢失；请稍后重试。",
    DatabaseUnavailable: "暂时无法连接数据库。您之前保存的内容都不会丢失；请稍后重试，"
    "如果问题持续，请联系管理员。",
    ModelError: "模型未能给出回答。",
    ModelUnreachable: "无法连接模型服务器。对话已保存，请稍后重试。",
    ModelTimeout: "模型服务器响应超时。对话已保存，请重试。",
    ModelDiedMidAnswer: "模型服务器在回答中途停止。已保留部分回答，请重试。",
    ModelRejectedInput: "模型拒绝了此请求。",
    IntakeError: "此文件无法使用。",
    intake.UnsupportedFileType: f"不支持此类文件。可接受的类型：{intake.ACCEPTED_TYPES}。",
    intake.EmptyFile: "文件为空（0 字节），请重新上传。",
    intake.FileTooLarge: "文件过大。",
    intake.ImageTooLarge: "图像像素过多，无法安全打开。",
    intake.AnimatedImage: "不接受动图；请上传静态图像（PNG 或 JPEG）。",
    intake.OddImageShape: "图像过于细长，模型无法读取。",
    intake.CorruptFile: "文件已损坏或不完整，无法读取。",
    intake.NotDicom: "文件扩展名是 DICOM，但内容并不是 DICOM。",
    intake.DicomWithoutImage: "此 DICOM 文件不包含图像。",
    intake.DeidentificationFailed: "无法去除此文件中的患者身份信息，因此未使用该文件。",
    intake.EncryptedPdf: "此 PDF 设有密码保护。请另存一份无密码的副本后再上传。",
    intake.TooManyPages: "PDF 页数过多。",
    intake.TooManyFiles: "一条消息中的文件过多。",
    intake.UnreadableFile: "无法读取该文件。",
}

#: Words that fill templates ("This {what} does not exist.", "Your role ({role}) ...").
NOUNS: dict[str, str] = {
    "consultation": "会诊",
    "message": "消息",
    "report": "报告",
    "attachment": "附件",
    "image": "图像",
    "answer": "回答",
    "title": "标题",
    "variant": "模型",
    "variant name": "模型名称",
    "clinician": "临床医生",
    "annotator": "标注员",
    "admin": "管理员",
    "role": "角色",
    "case": "病例",
    "case set": "病例集",
    "turn": "对比轮次",
    "window preset": "窗宽窗位预设",
}


def _error_entries() -> dict[str, Entry]:
    return {
        f"error.{cls.__name__}": {"en": cls.user_message, "zh-CN": zh} for cls, zh in ERRORS.items()
    }


#: Every entry: page text, server text, errors by class.
CATALOGUE: dict[str, Entry] = {**PAGE, **SERVER, **_error_entries()}

#: Gradio's translations for the page (`gr.mount_gradio_app(..., i18n=I18N)`).
I18N = gr.I18n(**{lang: {k: e[lang] for k, e in PAGE.items()} for lang in LANGUAGES})


def i18n(key: str) -> gr.i18n.I18nData:
    """A component's static text, shown in the page's language (KeyError if not catalogued)."""
    if key not in PAGE:
        raise KeyError(f"{key!r} is not page text in app.i18n.PAGE")
    return I18N(key)


def t(key: str, language: str | None = None, **fields: object) -> str:
    """A catalogue entry in `language` (default: the current request's), fields filled in."""
    lang = supported(language) or current_language()
    return CATALOGUE[key][lang].format(**fields)


#: Entries whose English an error or a stored answer may carry (what `translate` looks up).
MESSAGE_KEYS = ("edge.", "auth.", "guard.", "flow.", "api.", "storage.", "error.",
                "consult.open_first")  # fmt: skip

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")
_FIELD = re.compile(r"\{(\w+)\}")


@cache
def _templates() -> list[tuple[re.Pattern, str]]:
    """(regex of the English text, key) for entries with fields, longest first."""
    out = []
    for key, entry in CATALOGUE.items():
        en = entry["en"]
        if not key.startswith(MESSAGE_KEYS):
            continue
        if not _FIELD.search(en):
            continue
        parts = _FIELD.split(en)  # literal, name, literal, name, ...
        regex = "".join(
            re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+?)" for i, p in enumerate(parts)
        )
        out.append((re.compile(f"^{regex}$", re.S), key))
    return sorted(out, key=lambda item: -len(item[0].pattern))


@cache
def _sentences() -> dict[str, str]:
    """English text -> key, for entries without fields."""
    return {
        e["en"]: k
        for k, e in CATALOGUE.items()
        if k.startswith(MESSAGE_KEYS) and not _FIELD.search(e["en"])
    }


def split_bilingual(text: str) -> tuple[str, str] | None:
    """("English", "中文") of a message written as "English / 中文", else None."""
    for m in re.finditer(" / ", text):
        left, right = text[: m.start()], text[m.end() :]
        if not _CJK.search(left) and _CJK.search(right):
            return left, right
    return None


def translate(english: str, language: str | None = None) -> str | None:
    """A catalogued English sentence in `language` (default: the current request's); None if
    it is not in the catalogue. Template fields that are catalogued nouns are translated too."""
    lang = supported(language) or current_language()
    if lang == "en":
        return english
    if english in _sentences():
        return CATALOGUE[_sentences()[english]][lang]
    for regex, key in _templates():
        m = regex.match(english)
        if m:
            fields = {k: NOUNS.get(v, v) for k, v in m.groupdict().items()}
            return CATALOGUE[key][lang].format(**fields)
    return None


def error_text(exc: BaseException, english: str, language: str | None = None) -> str:
    """What a person reading `language` sees for `exc`, whose English message is `english`.

    A catalogued sentence is translated; a message already written in both languages
    ("English / 中文") gives its half; a bad file keeps its name in front. Otherwise the
    Chinese of the error's class (`ERRORS`, or a catalogued class message) is shown with the
    English specifics after it, so nothing the English said is lost.
    """
    lang = supported(language) or current_language()
    both = split_bilingual(english)
    if both is not None:
        return both[0] if lang == "en" else both[1]
    if lang == DEFAULT_LANGUAGE or _CJK.search(english):
        return english
    if isinstance(exc, IntakeError) and exc.filename and english == str(exc):
        return f"{exc.filename}：{_in_class_words(exc, exc.detail, lang)}"
    return _in_class_words(exc, english, lang)


def _in_class_words(exc: BaseException, english: str, lang: str) -> str:
    found = translate(english, lang)
    if found is not None:
        return found
    for cls in type(exc).__mro__:
        general = ERRORS.get(cls) or translate(getattr(cls, "user_message", None) or "", lang)
        if general:
            return general if english == cls.user_message else f"{general}（{english}）"
    return english
