import { useState } from 'preact/hooks';
import { api } from '../api';
import { Card, ErrorNote } from '../components/ui';
import { newEventId } from '../format';
import type { AppendResult } from '../types';

/** `POST /events` in structured mode: enough to follow the tour without curl (needs the `publish` scope). */
export function PublishEvent() {
  const [source, setSource] = useState('/console');
  const [type, setType] = useState('com.example.test');
  const [id, setId] = useState('');
  const [partitionKey, setPartitionKey] = useState('');
  const [data, setData] = useState('{"hello": "world"}');
  const [result, setResult] = useState<string | undefined>();
  const [error, setError] = useState<string | undefined>();
  // Off while a publish is answered: a double click stored two events (each gets its own random id).
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    if (busy) return;
    setError(undefined);
    setResult(undefined);
    let parsed: unknown;
    try {
      parsed = data.trim() === '' ? undefined : JSON.parse(data);
    } catch (err) {
      setError(`data: not valid JSON (${(err as Error).message})`);
      return;
    }
    const event: Record<string, unknown> = { specversion: '1.0', id: id.trim() || newEventId(), source, type };
    if (partitionKey.trim()) event.partitionkey = partitionKey.trim();
    if (parsed !== undefined) Object.assign(event, { datacontenttype: 'application/json', data: parsed });
    setBusy(true);
    try {
      const answer = await api.post<{ results: AppendResult[] }>('events', event, 'application/cloudevents+json');
      const r = answer.results[0]!;
      setResult(
        r.duplicate
          ? `Duplicate of ${r.id}: already stored in partition ${r.partition} at offset ${r.offset}.`
          : `Stored ${r.id} in partition ${r.partition} at offset ${r.offset}.`,
      );
      setId('');
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <Card title="Publish a test event">
      <form class="form" onSubmit={submit} data-testid="publish-event">
        <label>
          source
          <input name="source" value={source} required onInput={(e) => setSource(e.currentTarget.value)} />
        </label>
        <label>
          type
          <input name="type" value={type} required onInput={(e) => setType(e.currentTarget.value)} />
        </label>
        <label>
          id (empty: a random one)
          <input name="id" value={id} onInput={(e) => setId(e.currentTarget.value)} />
        </label>
        <label>
          partition key (optional)
          <input name="partitionkey" value={partitionKey} onInput={(e) => setPartitionKey(e.currentTarget.value)} />
        </label>
        <label class="wide">
          data (JSON)
          <textarea name="data" rows={2} class="mono" value={data} onInput={(e) => setData(e.currentTarget.value)} />
        </label>
        <div class="form-actions">
          <button type="submit" disabled={busy}>
            Publish
          </button>
          {result && (
            <span class="dim" role="status" data-testid="publish-result">
              {result}
            </span>
          )}
        </div>
      </form>
      <ErrorNote message={error} onDismiss={() => setError(undefined)} />
    </Card>
  );
}
