/**
 * The side panel: work in flight, cost by model (table and chart), budgets,
 * the default-model picker, the last calls and search.
 *
 * Built with DOM calls only; every string from the server is set with
 * `textContent` (model output is hostile), never as HTML.
 */

import { Widget } from '@lumino/widgets';

import { Api, ICall, ICallSummary, ICostRow, IStatus } from './api';

export interface IPanelContext {
  notebook: () => string | null;
  kernel: () => string | null;
  setModel: (model: string) => Promise<string>;
  stopAll: () => Promise<unknown>;
}

type Attrs = Record<string, string>;

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') {
      node.className = value;
    } else {
      node.setAttribute(key, value);
    }
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Attrs): SVGElementTagNameMap[K] {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs)) {
    node.setAttribute(key, value);
  }
  return node;
}

function section(title: string, id: string): [HTMLElement, HTMLElement] {
  const box = el('section', { class: 'jp-NotebookLLM-section', 'aria-labelledby': id });
  box.appendChild(el('h3', { id }, title));
  const body = el('div', { class: 'jp-NotebookLLM-body' });
  box.appendChild(body);
  return [box, body];
}

function seconds(started: number): string {
  return `${Math.max(0, Date.now() / 1000 - started).toFixed(0)}s`;
}

export class CallLogPanel extends Widget {
  private running: HTMLElement;
  private costs: HTMLElement;
  private budgets: HTMLElement;
  private modelInput: HTMLInputElement;
  private modelList: HTMLDataListElement;
  private modelNote: HTMLElement;
  private search: HTMLInputElement;
  private calls: HTMLElement;
  private detail: HTMLElement;
  private searchTimer = 0;

  constructor(private api: Api, private context: IPanelContext) {
    super();
    this.addClass('jp-NotebookLLM-panel');
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', 'notebook-llm call log');
    this.node.tabIndex = -1;

    const header = el('div', { class: 'jp-NotebookLLM-header' });
    header.appendChild(el('h2', {}, 'notebook-llm'));
    const refresh = el('button', { class: 'jp-NotebookLLM-button', type: 'button',
                                   'aria-label': 'Refresh the call log' }, 'Refresh');
    refresh.addEventListener('click', () => void this.refresh());
    const stop = el('button', { class: 'jp-NotebookLLM-button jp-mod-warn', type: 'button',
                                'aria-label': 'Stop all LLM work in this kernel' },
                    'Stop all LLM work');
    stop.addEventListener('click', () => void this.context.stopAll());
    header.append(refresh, stop);
    this.node.appendChild(header);

    let box: HTMLElement;
    [box, this.running] = section('Running', 'notebook-llm-running');
    this.running.setAttribute('aria-live', 'polite');
    this.node.appendChild(box);

    [box, this.costs] = section('Cost by model', 'notebook-llm-costs');
    this.node.appendChild(box);

    [box, this.budgets] = section('Budgets', 'notebook-llm-budgets');
    this.node.appendChild(box);

    let picker: HTMLElement;
    [box, picker] = section('Default model', 'notebook-llm-model');
    const form = el('form', { class: 'jp-NotebookLLM-model' });
    this.modelInput = el('input', { type: 'text', list: 'notebook-llm-models',
                                    'aria-label': "The kernel's default model",
                                    placeholder: 'provider:model' });
    this.modelList = el('datalist', { id: 'notebook-llm-models' });
    const set = el('button', { class: 'jp-NotebookLLM-button', type: 'submit',
                               'aria-label': "Set the kernel's default model" }, 'Set');
    this.modelNote = el('div', { class: 'jp-NotebookLLM-note', role: 'status' });
    form.append(this.modelInput, this.modelList, set);
    form.addEventListener('submit', event => {
      event.preventDefault();
      const model = this.modelInput.value.trim();
      if (model) {
        this.modelNote.textContent = 'setting…';
        void this.context.setModel(model).then(note => {
          this.modelNote.textContent = note;
        });
      }
    });
    picker.append(form, this.modelNote);
    this.node.appendChild(box);

    let calls: HTMLElement;
    [box, calls] = section('Calls', 'notebook-llm-calls');
    this.search = el('input', { type: 'search', class: 'jp-NotebookLLM-search',
                                'aria-label': 'Search prompts and answers',
                                placeholder: 'Search prompts and answers' });
    this.search.addEventListener('input', () => {
      window.clearTimeout(this.searchTimer);
      this.searchTimer = window.setTimeout(() => void this.loadCalls(), 250);
    });
    this.calls = el('ul', { class: 'jp-NotebookLLM-calls', 'aria-label': 'Last calls' });
    this.detail = el('div', { class: 'jp-NotebookLLM-detail', 'aria-live': 'polite' });
    calls.append(this.search, this.calls, this.detail);
    this.node.appendChild(box);
  }

  protected onAfterShow(): void {
    void this.refresh();
  }

  /** Reload costs, models and calls (the status comes from the poll). */
  async refresh(): Promise<void> {
    await Promise.all([this.loadCosts(), this.loadCalls(), this.loadModels()]);
  }

  showStatus(status: IStatus): void {
    if (!this.isVisible) {
      return;
    }
    this.running.replaceChildren();
    if (!status.running.length) {
      this.running.appendChild(el('div', { class: 'jp-NotebookLLM-note' }, 'nothing running'));
    }
    for (const item of status.running) {
      const line = `${item.kind} · ${item.model}${item.label ? ` · ${item.label}` : ''} · ` +
        `${seconds(item.started)}${item.stopping ? ' · stopping' : ''}`;
      this.running.appendChild(el('div', { class: 'jp-NotebookLLM-run' }, line));
    }
    this.budgets.replaceChildren();
    if (!status.budgets.length) {
      this.budgets.appendChild(el('div', { class: 'jp-NotebookLLM-note' },
                                  'no budget set (nl.track(budget_usd=…))'));
    }
    for (const budget of status.budgets) {
      const row = el('div', { class: 'jp-NotebookLLM-budget' });
      row.appendChild(el('span', {}, budget.text));
      const meter = el('meter', { min: '0', max: String(budget.budget_usd),
                                  value: String(budget.spent_usd),
                                  'aria-label': `${budget.name}: spent of budget` });
      row.appendChild(meter);
      this.budgets.appendChild(row);
    }
    if (status.default_model && document.activeElement !== this.modelInput &&
        !this.modelInput.value) {
      this.modelInput.placeholder = status.default_model;
    }
  }

  private async loadCosts(): Promise<void> {
    const costs = await this.api.costs(this.context.notebook());
    this.costs.replaceChildren();
    this.costs.appendChild(this.costTable('Today', costs.today));
    if (costs.notebook_path) {
      this.costs.appendChild(this.costTable('This notebook', costs.notebook));
    }
    this.costs.appendChild(this.chart(costs.today));
  }

  private costTable(caption: string, rows: ICostRow[]): HTMLElement {
    const table = el('table', { class: 'jp-NotebookLLM-table' });
    table.appendChild(el('caption', {}, caption));
    const head = el('tr');
    for (const name of ['model', 'calls', 'tokens', 'cost']) {
      head.appendChild(el('th', { scope: 'col' }, name));
    }
    table.appendChild(el('thead')).appendChild(head);
    const body = table.appendChild(el('tbody'));
    if (!rows.length) {
      const row = body.appendChild(el('tr'));
      row.appendChild(el('td', { colspan: '4' }, 'no calls'));
    }
    for (const r of rows) {
      const row = body.appendChild(el('tr'));
      row.appendChild(el('td', {}, r.model));
      row.appendChild(el('td', {}, String(r.calls)));
      row.appendChild(el('td', {}, `${r.input_tokens}+${r.output_tokens}`));
      row.appendChild(el('td', {}, r.cost_text));
    }
    return table;
  }

  /** Horizontal bars of today's cost by model (an SVG; labels are text nodes). */
  private chart(rows: ICostRow[]): Element {
    const priced = rows.filter(r => r.cost_usd > 0).slice(0, 8);
    if (!priced.length) {
      return el('div', { class: 'jp-NotebookLLM-note' }, 'no priced calls today');
    }
    const top = Math.max(...priced.map(r => r.cost_usd));
    const bar = 16;
    const chart = svg('svg', {
      class: 'jp-NotebookLLM-chart', role: 'img', width: '100%',
      viewBox: `0 0 300 ${priced.length * (bar + 4)}`,
      'aria-label': "Today's cost by model"
    });
    priced.forEach((r, i) => {
      const y = i * (bar + 4);
      chart.appendChild(svg('rect', {
        x: '0', y: String(y), height: String(bar),
        width: String(Math.max(2, (r.cost_usd / top) * 180)), class: 'jp-NotebookLLM-bar'
      }));
      const label = svg('text', { x: '186', y: String(y + bar - 4), class: 'jp-NotebookLLM-barLabel' });
      label.textContent = `${r.cost_text} ${r.model}`;
      chart.appendChild(label);
    });
    return chart;
  }

  private async loadModels(): Promise<void> {
    const { models } = await this.api.models();
    this.modelList.replaceChildren(...models.map(m => el('option', { value: m })));
  }

  private async loadCalls(): Promise<void> {
    const found = await this.api.calls(this.search.value.trim());
    this.calls.replaceChildren();
    if (!found.calls.length) {
      this.calls.appendChild(el('li', { class: 'jp-NotebookLLM-note' },
                                this.search.value ? 'no call matches' : 'no calls yet'));
    }
    for (const call of found.calls) {
      this.calls.appendChild(this.callItem(call));
    }
  }

  private callItem(call: ICallSummary): HTMLElement {
    const item = el('li');
    const button = el('button', {
      class: 'jp-NotebookLLM-call', type: 'button', 'aria-expanded': 'false',
      'data-call-id': call.id
    });
    const when = call.created_at.replace('T', ' ').slice(0, 19);
    button.appendChild(el('div', { class: 'jp-NotebookLLM-callHead' },
                          `${when} · ${call.model ?? '?'} · ${call.cost_text}` +
                          (call.error_class ? ` · ${call.error_class}` : '')));
    button.appendChild(el('div', { class: 'jp-NotebookLLM-callPrompt' }, call.prompt));
    button.appendChild(el('div', { class: 'jp-NotebookLLM-callAnswer' }, call.answer));
    button.setAttribute('aria-label', `Open the call of ${when} to ${call.model ?? 'a model'}`);
    button.addEventListener('click', () => void this.open(call.id, button));
    item.appendChild(button);
    return item;
  }

  private async open(id: string, button: HTMLElement): Promise<void> {
    this.calls.querySelectorAll('[aria-expanded="true"]')
      .forEach(node => node.setAttribute('aria-expanded', 'false'));
    button.setAttribute('aria-expanded', 'true');
    const call: ICall = await this.api.call(id);
    this.detail.replaceChildren();
    this.detail.appendChild(el('h4', {}, `${String(call.model ?? '')} · ${String(call.created_at ?? '')}`));
    const facts = [
      ['cost', String(call.cost_text ?? '')],
      ['tokens', `${String(call.input_tokens ?? 0)} in, ${String(call.output_tokens ?? 0)} out`],
      ['latency', call.latency_s ? `${Number(call.latency_s).toFixed(2)}s` : ''],
      ['finish', String(call.finish_reason ?? '')],
      ['notebook', String(call.notebook_path ?? '')]
    ];
    const list = el('dl', { class: 'jp-NotebookLLM-facts' });
    for (const [name, value] of facts) {
      if (value) {
        list.append(el('dt', {}, name), el('dd', {}, value));
      }
    }
    this.detail.appendChild(list);
    if (call.system) {
      this.detail.appendChild(el('h5', {}, 'System'));
      this.detail.appendChild(el('pre', { class: 'jp-NotebookLLM-text' }, String(call.system)));
    }
    const messages = Array.isArray(call.messages) ? call.messages : [];
    for (const message of messages as Array<Record<string, unknown>>) {
      this.detail.appendChild(el('h5', {}, String(message.role ?? 'message')));
      const content = typeof message.content === 'string'
        ? message.content : JSON.stringify(message.content, null, 2);
      this.detail.appendChild(el('pre', { class: 'jp-NotebookLLM-text' }, content));
    }
    this.detail.appendChild(el('h5', {}, 'Answer'));
    this.detail.appendChild(el('pre', { class: 'jp-NotebookLLM-text jp-NotebookLLM-answer' },
                               String(call.response_text ?? '')));
    if (call.error_class) {
      this.detail.appendChild(el('pre', { class: 'jp-NotebookLLM-text jp-mod-error' },
                                 `${String(call.error_class)}: ${String(call.error_message ?? '')}`));
    }
  }
}
