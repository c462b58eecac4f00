/**
 * What a suite does when a server it needs is not installed: on a developer's machine it is skipped
 * with the reason printed (as the e2e suites do); in CI (`CI=true`, where `.ci/run` installs every
 * tool) a missing tool fails the run instead, so nothing is skipped there unnoticed.
 */
export function requireTools(suite: string, tools: Record<string, boolean>): string | undefined {
  const missing = Object.entries(tools)
    .filter(([, present]) => !present)
    .map(([name]) => name);
  if (missing.length === 0) return undefined;
  const reason = `${suite}: skipped, missing ${missing.join(', ')} (.ci/run installs them)`;
  if (process.env.CI === 'true') throw new Error(`${suite}: ${missing.join(', ')} not installed, and CI must run every suite`);
  console.warn(reason);
  return reason;
}
