/**
 * notebook-llm in JupyterLab 4 and Notebook 7.
 *
 * - A status item, "$0.0123 · 2 running": the spend since the current kernel
 *   loaded notebook-llm, and the work it has in flight. Polled once a second
 *   from the server extension (`/notebook-llm/status`), which reads the call log
 *   and the small file the kernel's registry of work in flight writes, so a
 *   busy kernel is never asked. In JupyterLab it sits in the status bar; in
 *   Notebook 7, which has none, in the notebook toolbar.
 * - A side panel (click the status item): cost by model as a table and a chart,
 *   budgets, the default-model picker, the last calls (each opens into its full
 *   prompt and answer) and a search. It reads the call log through the server,
 *   so it works with no kernel at all.
 * - A toolbar button, "Stop all LLM work": asks the server to drop a stop
 *   request beside the kernel, which the kernel's watcher turns into
 *   `nl.stop_all()` within a fraction of a second, even while a cell runs.
 * - Widgets saved while live, reopened where no kernel holds their model,
 *   show the static fallback their output carries (see fallback.ts).
 *
 * Everything from the call log (model text above all) goes into the page as
 * text (`textContent`), never as HTML.
 */

import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ToolbarButton } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { stopIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { watchStuckWidgets } from './fallback';
import { CallLogPanel } from './panel';
import { Api, IStatus } from './api';

const PLUGIN_ID = 'jupyterlab-notebook-llm:plugin';
const STOP_COMMAND = 'notebook-llm:stop-all';
const OPEN_COMMAND = 'notebook-llm:open-panel';
const POLL_MS = 1000;

/** The status item: spend and work in flight, a button that opens the panel. */
class StatusItem extends Widget {
  constructor(onOpen: () => void) {
    super();
    this.addClass('jp-NotebookLLM-status');
    this.node.setAttribute('role', 'button');
    this.node.tabIndex = 0;
    this.node.title =
      'notebook-llm: spend since this kernel loaded it · LLM calls in flight (click for the call log)';
    this.node.setAttribute('aria-label', 'notebook-llm spend and calls in flight; open the call log');
    this.node.addEventListener('click', onOpen);
    this.node.addEventListener('keydown', (event: KeyboardEvent) => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        onOpen();
      }
    });
    this.showStatus(null);
  }

  showStatus(status: IStatus | null): void {
    const money = status ? status.session_text : '$0';
    const count = status ? status.count : 0;
    const text = `${money} · ${count} running`;
    if (this.node.textContent !== text) {
      this.node.textContent = text;
    }
    this.toggleClass('jp-NotebookLLM-busy', count > 0);
    this.node.dataset.running = String(count);
  }
}

function currentNotebook(
  app: JupyterFrontEnd,
  tracker: INotebookTracker
): NotebookPanel | null {
  const current = app.shell.currentWidget;
  if (current && tracker.has(current)) {
    return current as NotebookPanel;
  }
  return tracker.currentWidget;
}

function kernelId(panel: NotebookPanel | null): string | null {
  const kernel = panel?.sessionContext.session?.kernel;
  return kernel ? kernel.id : null;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'notebook-llm: spend and work in flight, the call log, Stop all LLM work.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [IStatusBar, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    statusBar: IStatusBar | null
  ) => {
    const api = new Api(ServerConnection.makeSettings());
    const items: StatusItem[] = [];
    const panel = new CallLogPanel(api, {
      notebook: () => currentNotebook(app, tracker)?.context.path ?? null,
      kernel: () => kernelId(currentNotebook(app, tracker)),
      setModel: (model: string) => setDefaultModel(currentNotebook(app, tracker), model),
      stopAll: () => app.commands.execute(STOP_COMMAND)
    });
    panel.id = 'notebook-llm-panel';
    panel.title.caption = 'notebook-llm: costs and the call log';
    panel.title.label = 'LLM';
    app.shell.add(panel, 'right', { rank: 900 });

    const openPanel = (): void => {
      app.shell.activateById(panel.id);
      void panel.refresh();
    };
    app.commands.addCommand(OPEN_COMMAND, {
      label: 'Show the notebook-llm call log',
      execute: openPanel
    });
    app.commands.addCommand(STOP_COMMAND, {
      label: 'Stop all LLM work',
      caption: 'Stop every LLM stream, compare, batch and tool loop in this kernel',
      icon: stopIcon,
      execute: async () => {
        const id = kernelId(currentNotebook(app, tracker));
        if (!id) {
          return;
        }
        await api.stopAll(id);
        void poll();
      }
    });

    if (statusBar) {
      const item = new StatusItem(openPanel);
      items.push(item);
      statusBar.registerStatusItem('notebook-llm:status', {
        item,
        align: 'left',
        rank: 5
      });
    }

    app.docRegistry.addWidgetExtension('Notebook', {
      createNew: (nb: NotebookPanel) => {
        const button = new ToolbarButton({
          icon: stopIcon,
          label: 'Stop all LLM work',
          tooltip: 'Stop every LLM stream, compare, batch and tool loop in this kernel',
          className: 'jp-NotebookLLM-stopAll',
          onClick: () => void app.commands.execute(STOP_COMMAND)
        });
        button.node.setAttribute('aria-label', 'Stop all LLM work in this kernel');
        nb.toolbar.insertItem(10, 'notebook-llm-stop-all', button);
        if (!statusBar) {
          // Notebook 7 has no status bar: the same item in the notebook toolbar.
          const item = new StatusItem(openPanel);
          items.push(item);
          nb.toolbar.insertItem(11, 'notebook-llm-status', item);
          item.disposed.connect(() => items.splice(items.indexOf(item), 1));
        }
        return button;
      }
    });

    let polling = false;
    const poll = async (): Promise<void> => {
      if (polling) {
        return;
      }
      polling = true;
      try {
        const nb = currentNotebook(app, tracker);
        const status = await api.status(kernelId(nb), nb?.context.path ?? null);
        items.forEach(item => item.showStatus(status));
        panel.showStatus(status);
      } catch (reason) {
        // The server part is missing or restarting: keep the last figures.
      } finally {
        polling = false;
      }
    };
    window.setInterval(() => void poll(), POLL_MS);
    void poll();
    watchStuckWidgets(tracker);
  }
};

/** Set the kernel's default model, as `%llm_config model M` does. */
async function setDefaultModel(nb: NotebookPanel | null, model: string): Promise<string> {
  const kernel = nb?.sessionContext.session?.kernel;
  if (!kernel) {
    return 'no kernel: open a notebook with a running kernel';
  }
  const code =
    'import notebook_llm as __nl\n' +
    'from notebook_llm.core import inflight as __inflight\n' +
    `__nl.default_client().resolve(${JSON.stringify(model)})\n` +
    `__nl.default_client().default = ${JSON.stringify(model)}\n` +
    '__inflight.refresh_status()\n' +
    'del __nl, __inflight';
  const future = kernel.requestExecute({
    code,
    silent: true,
    store_history: false,
    stop_on_error: false
  });
  let error = '';
  future.onIOPub = msg => {
    if (msg.header.msg_type === 'error') {
      const content = msg.content as { ename?: string; evalue?: string };
      error = `${content.ename ?? 'Error'}: ${content.evalue ?? ''}`;
    }
  };
  await future.done;
  return error || `default model: ${model}`;
}

export default plugin;
