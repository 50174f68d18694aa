/**
 * Saved widgets that can no longer load show their static fallback.
 *
 * notebook-llm displays its live widgets (Stop buttons, the batch progress
 * bar) with a `text/html` and `text/plain` form in the same output bundle,
 * and replaces them with static output when the work ends. A notebook saved
 * while the work ran still holds the widget; reopened, ipywidgets' renderer
 * (which ranks above HTML) waits for a model no kernel has and shows
 * "Loading widget..." for ever. This finds such outputs and renders the
 * bundle's own `text/html` (sanitised by JupyterLab's HTML renderer, the
 * output being untrusted) in their place.
 */

import type { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import type { INotebookTracker } from '@jupyterlab/notebook';
import type { Panel, Widget } from '@lumino/widgets';

const WIDGET_MIME = 'application/vnd.jupyter.widget-view+json';
const STUCK = /^(Loading widget|Error displaying widget)/;
const SCAN_MS = 1500;

/** Placeholders seen on the previous scan: replaced when seen twice in a row. */
const seen = new WeakSet<Widget>();

function fallbackModel(data: Record<string, unknown>): IRenderMime.IMimeModel {
  return {
    trusted: false,
    data: { 'text/html': String(data['text/html']) },
    metadata: {},
    setData: () => undefined
  };
}

function scanNotebook(panel: any): void {
  const rendermime = panel.content.rendermime;
  for (const cell of panel.content.widgets as any[]) {
    const area = cell.outputArea;
    if (!area || !area.model) {
      continue;
    }
    const children = area.widgets as Panel[];
    const count = Math.min(children.length, area.model.length);
    for (let i = 0; i < count; i++) {
      const data = area.model.get(i).data as Record<string, unknown>;
      if (!(WIDGET_MIME in data) || typeof data['text/html'] !== 'string') {
        continue;
      }
      const child = children[i];
      const shown = child.widgets[child.widgets.length - 1];
      if (!shown || !STUCK.test((shown.node.textContent ?? '').trim())) {
        continue;
      }
      if (!seen.has(shown)) {
        seen.add(shown);
        continue;
      }
      const renderer = rendermime.createRenderer('text/html') as IRenderMime.IRenderer;
      renderer.addClass('jp-NotebookLLM-fallback');
      void renderer.renderModel(fallbackModel(data)).then(() => {
        if (!shown.isDisposed) {
          child.insertWidget(child.widgets.indexOf(shown), renderer);
          shown.dispose();
        }
      });
    }
  }
}

/** Check the open notebooks every 1.5 s (cheap: a few text checks per widget output). */
export function watchStuckWidgets(tracker: INotebookTracker): void {
  window.setInterval(() => {
    tracker.forEach(panel => {
      try {
        scanNotebook(panel);
      } catch (reason) {
        console.warn('notebook-llm: could not check saved widgets', reason);
      }
    });
  }, SCAN_MS);
}
