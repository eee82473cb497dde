import { useState } from 'preact/hooks';
import { keyProblem } from '../api';

/**
 * Asks for an API key when the gateway has `HERALD_API_KEYS`. The key stays in this tab's
 * `sessionStorage` (gone when the tab closes; never `localStorage`, never a cookie).
 */
export function KeyPrompt(props: { message?: string; onKey: (key: string) => void }) {
  const [key, setKey] = useState('');
  const [refused, setRefused] = useState<string | undefined>();
  const submit = (e: Event) => {
    e.preventDefault();
    const typed = key.trim();
    if (!typed) return;
    // Checked here: the browser cannot put such a key in a header, so the gateway would never see it.
    const problem = keyProblem(typed);
    setRefused(problem);
    if (!problem) props.onKey(typed);
  };
  const message = refused ?? props.message;
  return (
    <div class="center">
      <form class="card key-prompt" data-testid="key-prompt" onSubmit={submit}>
        <h2>API key needed</h2>
        <p>
          This gateway requires an API key. Use one with the <code>admin</code> scope (it includes <code>read</code>) to see and manage
          everything; <code>publish</code> is needed only to publish test events.
        </p>
        {message && (
          <div class="note note-error" role="alert">
            {message}
          </div>
        )}
        <label>
          API key
          <input
            type="password"
            name="api-key"
            autoComplete="off"
            spellcheck={false}
            value={key}
            autoFocus
            onInput={(e) => setKey(e.currentTarget.value)}
          />
        </label>
        <p class="dim small">
          Sent as <code>Authorization: Bearer</code> to this gateway only, and kept in this tab's session storage until the tab closes.
        </p>
        <button type="submit">Use this key</button>
      </form>
    </div>
  );
}
