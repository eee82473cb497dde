import type { SubscriptionStats } from './types';

const integer = new Intl.NumberFormat('en');

export function formatCount(n: number): string {
  return integer.format(n);
}

/** `850 ms`, `12 s`, `4 min 10 s`, `3 h 5 min`, `2 d 4 h`. */
export function formatAge(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const min = Math.floor(s / 60);
  if (min < 60) return s % 60 ? `${min} min ${s % 60} s` : `${min} min`;
  const h = Math.floor(min / 60);
  if (h < 24) return min % 60 ? `${h} h ${min % 60} min` : `${h} h`;
  const d = Math.floor(h / 24);
  return h % 24 ? `${d} d ${h % 24} h` : `${d} d`;
}

/** Local time of day, with the date when it is not today. */
export function formatTime(iso: string | number): string {
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return String(iso);
  const time = at.toLocaleTimeString('en-GB', { hour12: false });
  return at.toDateString() === new Date().toDateString() ? time : `${at.toLocaleDateString('en-CA')} ${time}`;
}

export function formatRate(perSecond: number | undefined): string {
  if (perSecond === undefined) return '—';
  if (perSecond === 0) return '0 /s';
  return `${perSecond < 10 ? perSecond.toFixed(1) : formatCount(Math.round(perSecond))} /s`;
}

/**
 * One line of JSON, cut to `max` characters. Only the start of a long string is serialised, and a cut
 * is copied (`join`): in V8 a slice keeps its whole parent string alive, so a kept preview would keep
 * all of a large event's data.
 */
export function preview(value: unknown, max = 160): string {
  const text = value === undefined ? '' : JSON.stringify(typeof value === 'string' ? value.slice(0, max) : value);
  return text.length > max ? `${Array.from(text.slice(0, max - 1)).join('')}…` : text;
}

/**
 * An attribute shown in a list, cut to `max` characters and copied (see `preview`): a 900 KB `id`, which
 * the gateway takes, kept whole in 500 lines filled the tab (console probe: 89 MB for 40 of them).
 */
export function clipped(text: string, max = 200): string {
  return text.length > max ? `${Array.from(text.slice(0, max - 1)).join('')}…` : text;
}

export interface Totals {
  lag: number;
  inFlight: number;
  oldestPendingAgeMs: number | null;
  expired: number;
}

/** A subscription's figures summed (lag, in-flight) or maximised (oldest pending age) over its partitions. */
export function totals(stats: SubscriptionStats | null | undefined): Totals {
  const out: Totals = { lag: 0, inFlight: 0, oldestPendingAgeMs: null, expired: 0 };
  for (const p of stats?.partitions ?? []) {
    out.lag += p.lag;
    out.inFlight += p.inFlight;
    out.expired += p.expired;
    if (p.oldestPendingAgeMs !== null) out.oldestPendingAgeMs = Math.max(out.oldestPendingAgeMs ?? 0, p.oldestPendingAgeMs);
  }
  return out;
}

/** A fresh event id: `crypto.randomUUID` needs a secure context, which a plain-http gateway page is not. */
export function newEventId(): string {
  if (typeof crypto.randomUUID === 'function' && window.isSecureContext) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * `text` with every bidirectional control (the embeddings, overrides and isolates, and the marks) and
 * every invisible format character (zero-width space, word joiner, the invisible operators, the byte
 * order mark) written as a `\u202e`-style escape, as the CLI writes them: the console shows events,
 * answers and errors that others wrote. U+202E in a receiver's error would otherwise reverse what
 * follows it on screen (a dead letter's "last error" could be made to read anything), and a zero-width
 * space makes two different ids look the same. The zero-width joiner and non-joiner stay (emoji and
 * scripts such as Persian use them). In JSON the escape is the same character, so a shown event still parses.
 */
export function withoutHiddenCharacters(text: string): string {
  return text.replace(
    /[\u061c\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}
