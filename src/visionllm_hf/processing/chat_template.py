"""The Vicuna v1.1 conversation format VisionLLM v2 was trained with, as a Jinja chat template.

Messages follow the transformers convention: `content` is a string or a list of parts
`{"type": "image"}` / `{"type": "video"}` / `{"type": "text", "text": ...}`. Each image part becomes `<image>` and a
newline, each video part `<video>` and a newline.
Assistant turns sit inside `{% generation %}` so `return_assistant_tokens_mask=True` marks the answer tokens.

    SYSTEM USER: <image>\\nquestion ASSISTANT: answer</s>USER: ... ASSISTANT:
"""

DEFAULT_SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}{%- for part in content -%}"
    "{%- if part['type'] == 'image' -%}{{ '<image>\\n' }}"
    "{%- elif part['type'] == 'video' -%}{{ '<video>\\n' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if messages[0]['role'] == 'system' -%}{{ render(messages[0]['content']) }}"
    "{%- else -%}{{ '" + DEFAULT_SYSTEM_PROMPT.replace("'", "\\'") + "' }}{%- endif -%}"
    "{%- for message in messages if message['role'] != 'system' -%}"
    "{%- if message['role'] == 'user' -%}{{ ' USER: ' if loop.first else 'USER: ' }}{{ render(message['content']) }}"
    "{%- else -%}{{ ' ASSISTANT: ' }}{% generation %}{{ render(message['content']) }}{{ eos_token }}"
    "{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ ' ASSISTANT:' }}{%- endif -%}"
)

__all__ = ["CHAT_TEMPLATE", "DEFAULT_SYSTEM_PROMPT"]
