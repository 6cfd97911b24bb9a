// Results kept in the browser (IndexedDB), so nothing is lost on a re-run or a reload. Falls back to
// memory where IndexedDB is unavailable (some private modes).

const DB = "varedit";
const STORE = "runs";
export const KEEP = 60; // runs kept; older ones are dropped

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

export class History {
  constructor() {
    this.memory = new Map();
    this.db = null;
  }

  async open() {
    try {
      const req = indexedDB.open(DB, 1);
      req.onupgradeneeded = () => req.result.createObjectStore(STORE, { keyPath: "id" });
      this.db = await request(req);
    } catch (e) {
      console.warn("varedit: IndexedDB unavailable, history kept in memory only", e);
      this.db = null;
    }
    return this;
  }

  store(mode) {
    return this.db.transaction(STORE, mode).objectStore(STORE);
  }

  async all() {
    const runs = this.db ? await request(this.store("readonly").getAll()) : [...this.memory.values()];
    return runs.sort((a, b) => b.time - a.time);
  }

  async put(run) {
    if (!this.db) {
      this.memory.set(run.id, run);
    } else {
      await request(this.store("readwrite").put(run));
    }
    const runs = await this.all();
    for (const old of runs.slice(KEEP)) await this.delete(old.id);
  }

  async delete(id) {
    if (!this.db) this.memory.delete(id);
    else await request(this.store("readwrite").delete(id));
  }

  async clear() {
    if (!this.db) this.memory.clear();
    else await request(this.store("readwrite").clear());
  }
}
