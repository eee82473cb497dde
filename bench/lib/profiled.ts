import fs from 'node:fs';
import path from 'node:path';
import type { CaseReport, Ctx } from './common';
import { newDir, removeDir } from './common';
import { mainThreadProfile, summarizeProfile, type ProfileScope } from './profile';

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
    if (summaries.length > 1) report.moreProfiles = summaries.slice(1);
  } catch (err) {
    report.profile = { error: (err as Error).message };
  } finally {
    removeDir(dir);
  }
}
