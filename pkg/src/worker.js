// Hosts the engine off the page's main thread; index.js posts {id, type, payload} here.
import { Host } from './core.js';

const host = new Host();
const aborts = new Map();

self.onmessage = async ({ data: m }) => {
  if (m.type === 'abort') {
    aborts.get(m.target)?.abort();
    return;
  }
  const controller = new AbortController();
  aborts.set(m.id, controller);
  try {
    const value = await host.call(m.type, m.payload, (event) => self.postMessage({ id: m.id, ...event }), controller.signal);
    self.postMessage({ id: m.id, type: 'done', value });
  } catch (e) {
    self.postMessage({ id: m.id, type: 'error', error: { message: e?.message ?? String(e), code: e?.code ?? 'internal', name: e?.name ?? 'Error', fatal: !!e?.fatal } });
  } finally {
    aborts.delete(m.id);
  }
};
