import fs from 'node:fs';
import path from 'node:path';
import type { CaseReport, Ctx } from './common';
import { newDir, removeDir } from './common';
import { mainThreadProfile, summarizeProfile, workerThreadProfiles, type ProfileScope, type ProfileSummary } from './profile';

/** Whether a case should spend an extra, unmeasured run on a CPU profile of the gateway. */
export function wantProfile(ctx: Ctx, report: CaseReport): boolean {
  if (ctx.profile === 'never') return false;
  if (ctx.profile === 'always') return true;
  return report.targets.some((t) => !t.pass);
}

/**
 * Runs `body` with a directory for `--cpu-prof-dir`; `body` starts the gateway
 * with it, stops it with SIGTERM (V8 writes the profile at exit) and says which
 * samples matter (the measured window, a function's subtree). The profile is
 * copied to the results directory and summarised into the report, one summary per scope.
 */
export async function attachProfile(ctx: Ctx, report: CaseReport, body: (cpuProfDir: string) => Promise<ProfileScope[]>): Promise<void> {
  const dir = newDir(ctx, `prof-${report.case}`);
  try {
    ctx.log(`${report.case}: extra run of the gateway under --cpu-prof`);
    const scopes = await body(dir);
    const file = mainThreadProfile(dir);
    if (!file) throw new Error('the gateway wrote no .cpuprofile (did it exit on SIGTERM?)');
    const kept = path.join(ctx.resultsDir, `${report.case}-${new Date().toISOString().replace(/[:.]/g, '-')}.cpuprofile`);
    fs.copyFileSync(file, kept);
    const summaries = (scopes.length > 0 ? scopes : [{}]).map((scope) => summarizeProfile(kept, scope));
    report.profile = summaries[0];
    const more = [...summaries.slice(1), ...busyWorkerThreads(ctx, report, dir)];
    if (more.length > 0) report.moreProfiles = more;
  } catch (err) {
    report.profile = { error: (err as Error).message };
  } finally {
    removeDir(dir);
  }
}

/**
 * The worker threads that did real work (busy over 5 % of their wall time: the delivery thread in
 * the delivery cases, the indexer in the ingest ones), kept beside the main thread's and summarised
 * whole: a miss may be theirs.
 */
function busyWorkerThreads(ctx: Ctx, report: CaseReport, dir: string): ProfileSummary[] {
  const out: ProfileSummary[] = [];
  for (const file of workerThreadProfiles(dir)) {
    const summary = summarizeProfile(file);
    if (summary.busyMs < summary.wallMs * 0.05) continue;
    const kept = path.join(ctx.resultsDir, `${report.case}-thread-${path.basename(file)}`);
    fs.copyFileSync(file, kept);
    out.push({ ...summary, file: path.basename(kept), scope: `worker thread (${summary.scope})` });
  }
  return out.sort((a, b) => b.busyMs - a.busyMs);
}
