// Both runners end by printing one JSON report on stdout and exiting. process.exit() does not
// wait for stdout: when the pipe is non-blocking (a child such as Chromium can leave it so), a
// large report was cut off mid-object and the test saw "exited 0 without a report". So the exit
// waits for the write's callback, which runs once the whole report is with the OS (or failed).
export function printReportAndExit(report, code) {
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`, () => process.exit(code));
}
