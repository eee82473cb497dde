import { execFileSync } from 'node:child_process';
import path from 'node:path';
import request from 'supertest';
import { mountExt4 } from '../helpers/disk-faults';
import { killIfRunning, postBatch, spawnGateway, type ChildGateway } from '../helpers/gateway';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

/**
 * What a client was told is done survives a power cut a moment later (file-system probe: a subscription
 * answered 201 was gone after a power cut 3 s later, and the data dir's id with it, so the start was refused:
 * herald.db's WAL was only synced at a checkpoint). The power cut is an ext4 file system on a loop file whose
 * journal is aborted (nothing more reaches the disk, what was not written back is lost); where the test may
 * not mount (CI runs as root), it is a SIGKILL, which checks less.
 */
const mounted = mountExt4(128 * 1024 * 1024);
const dataDir = path.join(mounted?.dir ?? tmpDir('herald-power-cut-'), 'data');
const env = { HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '1', HERALD_SEGMENT_BYTES: '1MiB', HERALD_MIN_FREE_BYTES: '0' };

let gw: ChildGateway | undefined;
let receiver: Receiver;
beforeAll(async () => {
  receiver = await startReceiver(() => ({ status: 204 }));
});
afterAll(async () => {
  await killIfRunning(gw); // before the unmount: its files are there
  await receiver.close();
  mounted?.unmount();
  cleanupTmpDirs();
});

/** Everything written so far on disk: what the next step writes is the only thing a power cut can take. */
const settle = () => execFileSync('sync');

/** A power cut now, then the gateway started again on what the disk kept. */
async function powerCutAndRestart(): Promise<ChildGateway> {
  const cut = async () => {
    gw!.child.kill('SIGKILL');
    await gw!.exited;
  };
  if (mounted) await mounted.powerCut(cut);
  else await cut();
  gw = await spawnGateway(env);
  return gw;
}

const subscriptions = async (url: string) =>
  ((await request(url).get('/subscriptions').expect(200)).body.subscriptions as { id: string; sink: string; state: string }[]).map(
    ({ id, sink, state }) => ({ id, sink, state }),
  );

describe('a power cut right after an answer', () => {
  it("keeps the data dir's id written at the first start: the next start is not refused", async () => {
    gw = await spawnGateway(env);
    gw = await powerCutAndRestart();
    expect(await subscriptions(gw.url)).toEqual([]);
  });

  it('keeps a subscription answered 201', async () => {
    settle();
    const created = (
      await request(gw!.url)
        .post('/subscriptions')
        .send({ sink: `${receiver.url}/a` })
        .expect(201)
    ).body;
    gw = await powerCutAndRestart();
    expect(await subscriptions(gw.url)).toEqual([{ id: created.id, sink: `${receiver.url}/a`, state: 'active' }]);
  });

  it('keeps a PATCH and a pause answered 200', async () => {
    const { id } = (await subscriptions(gw!.url))[0]!;
    settle();
    await request(gw!.url)
      .patch(`/subscriptions/${id}`)
      .send({ sink: `${receiver.url}/b` })
      .expect(200);
    gw = await powerCutAndRestart();
    expect(await subscriptions(gw.url)).toEqual([{ id, sink: `${receiver.url}/b`, state: 'active' }]);
    settle();
    await request(gw.url).post(`/subscriptions/${id}/pause`).expect(200);
    gw = await powerCutAndRestart();
    expect(await subscriptions(gw.url)).toEqual([{ id, sink: `${receiver.url}/b`, state: 'paused' }]);
  });

  it('keeps a seek answered 200: the replay asked for is not taken back', async () => {
    const { id } = (await subscriptions(gw!.url))[0]!;
    await request(gw!.url).post(`/subscriptions/${id}/resume`).expect(200);
    const events = [1, 2, 3].map((n) => ({ specversion: '1.0', id: `pc-${n}`, source: '/power-cut', type: 't' }));
    expect((await postBatch(gw!.url, events)).status).toBe(202);
    await waitFor(() => receiver.requests.length >= 3 || undefined);
    const committed = async (url: string) =>
      ((await request(url).get(`/subscriptions/${id}`).expect(200)).body.stats.partitions[0] as { committedOffset: number })
        .committedOffset;
    await request(gw!.url).post(`/subscriptions/${id}/pause`).expect(200);
    // The delivered position written by a clean stop, then a seek back to replay.
    gw!.child.kill('SIGTERM');
    expect(await gw!.exited).toBe(0);
    gw = await spawnGateway(env);
    expect(await committed(gw.url)).toBe(3);
    settle();
    await request(gw.url).post(`/subscriptions/${id}/seek`).send({ to: 'earliest' }).expect(200);
    gw = await powerCutAndRestart();
    expect(await committed(gw.url)).toBe(0);
  });

  it('keeps a DELETE answered 204: the subscription does not come back', async () => {
    const { id } = (await subscriptions(gw!.url))[0]!;
    settle();
    await request(gw!.url).delete(`/subscriptions/${id}`).expect(204);
    gw = await powerCutAndRestart();
    expect(await subscriptions(gw.url)).toEqual([]);
  });
});
