import { useState } from 'preact/hooks';

/**
 * Asks for an API key when the gateway has `HERALD_API_KEYS`. The key stays in this tab's
 * `sessionStorage` (gone when the tab closes; never `localStorage`, never a cookie).
 */
export function KeyPrompt(props: { message?: string; onKey: (key: string) => void }) {
  const [key, setKey] = useState('');
  return (
    <div class="center">
      <form
        class="card key-prompt"
        data-testid="key-prompt"
        onSubmit={(e) => {
          e.preventDefault();
          if (key.trim()) props.onKey(key.trim());
        }}
      >
        <h2>API key needed</h2>
        <p>
          This gateway requires an API key. Use one with the <code>admin</code> scope (it includes <code>read</code>) to see and manage
          everything; <code>publish</code> is needed only to publish test events.
        </p>
        {props.message && (
          <div class="note note-error" role="alert">
            {props.message}
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
