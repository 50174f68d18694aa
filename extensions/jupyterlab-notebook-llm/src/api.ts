/**
 * The server extension's routes (`notebook_llm/_server_ext.py`), typed.
 */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface IRunning {
  id: number;
  kind: string;
  model: string;
  label: string;
  started: number;
  stopping: boolean;
}

export interface IBudget {
  name: string;
  budget_usd: number;
  spent_usd: number;
  remaining_usd: number | null;
  calls: number;
  text: string;
}

export interface IStatus {
  session_usd: number;
  session_text: string;
  count: number;
  running: IRunning[];
  budgets: IBudget[];
  default_model: string | null;
  kernel_seen: boolean;
}

export interface ICostRow {
  model: string;
  calls: number;
  cost_usd: number;
  cost_text: string;
  input_tokens: number;
  output_tokens: number;
}

export interface ICosts {
  today: ICostRow[];
  notebook: ICostRow[];
  notebook_path: string | null;
}

export interface ICallSummary {
  id: string;
  created_at: string;
  model: string | null;
  cost_text: string;
  input_tokens: number | null;
  output_tokens: number | null;
  finish_reason: string | null;
  error_class: string | null;
  prompt: string;
  answer: string;
}

export interface ICalls {
  calls: ICallSummary[];
  search: 'fts' | 'like' | null;
}

export type ICall = Record<string, unknown>;

export class Api {
  constructor(private settings: ServerConnection.ISettings) {}

  private async request<T>(path: string, params: Record<string, string | null>,
                           method = 'GET'): Promise<T> {
    const query = Object.entries(params)
      .filter(([, value]) => value !== null && value !== '')
      .map(([key, value]) => `${encodeURIComponent(key)}=${encodeURIComponent(value as string)}`)
      .join('&');
    const url =
      URLExt.join(this.settings.baseUrl, 'notebook-llm', path) + (query ? `?${query}` : '');
    const response = await ServerConnection.makeRequest(url, { method }, this.settings);
    if (!response.ok) {
      throw new ServerConnection.ResponseError(response);
    }
    return (await response.json()) as T;
  }

  status(kernel: string | null, notebook: string | null): Promise<IStatus> {
    return this.request<IStatus>('status', { kernel, notebook });
  }

  costs(notebook: string | null): Promise<ICosts> {
    return this.request<ICosts>('costs', { notebook });
  }

  calls(query: string, limit = 30): Promise<ICalls> {
    return this.request<ICalls>('calls', { q: query, limit: String(limit) });
  }

  call(id: string): Promise<ICall> {
    return this.request<ICall>(`calls/${encodeURIComponent(id)}`, {});
  }

  models(): Promise<{ models: string[] }> {
    return this.request<{ models: string[] }>('models', {});
  }

  stopAll(kernel: string): Promise<{ requested: boolean }> {
    return this.request<{ requested: boolean }>('stop', { kernel }, 'POST');
  }
}
