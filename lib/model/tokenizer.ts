/**
 * Text <-> token ids through the model's own tokenizer.json (@huggingface/tokenizers), and its chat
 * template (@huggingface/jinja).
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { W4a8Error } from '../errors.js';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | string;
  content: string;
}

export class TextTokenizer {
  private readonly tokenizer: Tokenizer;
  private readonly template?: Template;
  private readonly specialTokens: Record<string, string>;

  constructor(tokenizerJson: string, tokenizerConfigJson?: string, chatTemplate?: string) {
    let config: Record<string, unknown> = {};
    try {
      config = tokenizerConfigJson ? JSON.parse(tokenizerConfigJson) : {};
      this.tokenizer = new Tokenizer(JSON.parse(tokenizerJson), config);
    } catch (error) {
      throw new W4a8Error('E_FILE', `the model's tokenizer cannot be loaded: ${(error as Error).message}`);
    }
    const template = chatTemplate ?? (typeof config.chat_template === 'string' ? config.chat_template : undefined);
    if (template) this.template = new Template(template);
    this.specialTokens = {};
    for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
      const v = config[key];
      if (typeof v === 'string') this.specialTokens[key] = v;
      else if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string')
        this.specialTokens[key] = (v as { content: string }).content;
    }
  }

  encode(text: string, addSpecialTokens = true): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: readonly number[]): string {
    return this.tokenizer.decode(Array.from(ids), { skip_special_tokens: true });
  }

  get hasChatTemplate(): boolean {
    return this.template !== undefined;
  }

  applyChatTemplate(messages: ChatMessage[], addGenerationPrompt = true): string {
    if (!this.template) throw new W4a8Error('E_OPTION', 'this model has no chat template');
    return this.template.render({ messages, add_generation_prompt: addGenerationPrompt, ...this.specialTokens });
  }
}
