import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';

export function Badge(props: { tone: 'ok' | 'warn' | 'bad' | 'info' | 'muted'; children: ComponentChildren; title?: string }) {
  return (
    <span class={`badge badge-${props.tone}`} title={props.title}>
      {props.children}
    </span>
  );
}

const STATE_TONE = { active: 'ok', paused: 'warn', validating: 'info' } as const;

/** `active`, `paused (gone)`, … */
export function StateBadge(props: { state: keyof typeof STATE_TONE; reason: string | null }) {
  return (
    <Badge tone={STATE_TONE[props.state] ?? 'muted'}>
      {props.state}
      {props.reason ? ` · ${props.reason}` : ''}
    </Badge>
  );
}

/** An HTTP status as a coloured code; `—` for no answer. */
export function StatusCode(props: { status: number | null }) {
  if (props.status === null) return <Badge tone="muted">no answer</Badge>;
  const tone = props.status < 300 ? 'ok' : props.status < 500 && props.status !== 408 && props.status !== 429 ? 'bad' : 'warn';
  return <Badge tone={tone}>{props.status}</Badge>;
}

export function ErrorNote(props: { message?: string; onDismiss?: () => void }) {
  if (!props.message) return null;
  return (
    <div class="note note-error" role="alert">
      <span>{props.message}</span>
      {props.onDismiss && (
        <button type="button" class="link" onClick={props.onDismiss}>
          dismiss
        </button>
      )}
    </div>
  );
}

export function Stat(props: { label: string; value: ComponentChildren; hint?: string; testId?: string }) {
  return (
    <div class="stat" title={props.hint}>
      <div class="stat-value" data-testid={props.testId}>
        {props.value}
      </div>
      <div class="stat-label">{props.label}</div>
    </div>
  );
}

export function Card(props: { title?: ComponentChildren; actions?: ComponentChildren; children: ComponentChildren; class?: string }) {
  return (
    <section class={`card ${props.class ?? ''}`}>
      {(props.title || props.actions) && (
        <header class="card-head">
          <h2>{props.title}</h2>
          <div class="actions">{props.actions}</div>
        </header>
      )}
      {props.children}
    </section>
  );
}

export function JsonBlock(props: { value: unknown }) {
  return <pre class="json">{JSON.stringify(props.value, null, 2)}</pre>;
}

/** A secret shown once: selectable, with a copy button (the clipboard API needs a secure context; selecting works anywhere). */
export function SecretField(props: { label: string; secret: string; onDone?: () => void }) {
  const [copied, setCopied] = useState(false);
  const field = useRef<HTMLInputElement>(null);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(props.secret);
      setCopied(true);
    } catch {
      field.current?.select();
    }
  };
  return (
    <div class="note note-secret" role="status">
      <div>
        <strong>{props.label}</strong> It is shown only now: store it where your receiver reads it.
      </div>
      <div class="secret-row">
        <input class="mono" readOnly value={props.secret} data-testid="secret" ref={field} onFocus={(e) => e.currentTarget.select()} />
        <button type="button" onClick={() => void copy()}>
          {copied ? 'Copied' : 'Copy'}
        </button>
        {props.onDone && (
          <button type="button" class="secondary" onClick={props.onDone}>
            Done
          </button>
        )}
      </div>
    </div>
  );
}

/**
 * A button that asks again before acting: the first click shows the question, the second acts. The
 * question takes the focus (on Cancel, so a second Enter does nothing harmful, inside a group named by
 * the question, which a screen reader reads); Cancel and the answer give it back to the button. Without that, the
 * focused button vanished and the focus fell to the page's top, the question unread.
 */
export function ConfirmButton(props: {
  label: string;
  /** The button's accessible name, when its label needs its row to make sense ("Delete" of which dead letter). */
  name?: string;
  question: string;
  confirmLabel: string;
  onConfirm: () => void;
  disabled?: boolean;
}) {
  const [asking, setAsking] = useState(false);
  // Set by the user's own click, so the first render does not take the focus.
  const moved = useRef(false);
  const button = useRef<HTMLButtonElement>(null);
  const cancel = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    if (!moved.current) return;
    (asking ? cancel : button).current?.focus();
  }, [asking]);
  const ask = (next: boolean) => {
    moved.current = true;
    setAsking(next);
  };
  if (!asking)
    return (
      <button type="button" class="danger" disabled={props.disabled} aria-label={props.name} ref={button} onClick={() => ask(true)}>
        {props.label}
      </button>
    );
  return (
    <span class="confirm" role="group" aria-label={props.question}>
      <span>{props.question}</span>
      <button
        type="button"
        class="danger"
        onClick={() => {
          // The button comes back and takes the focus (was: it fell to <body>); when the action removes it, the focus goes where it goes.
          ask(false);
          props.onConfirm();
        }}
      >
        {props.confirmLabel}
      </button>
      <button type="button" class="secondary" ref={cancel} onClick={() => ask(false)}>
        Cancel
      </button>
    </span>
  );
}
