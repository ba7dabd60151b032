// The import page: upload a products CSV, then follow the job's progress until it ends.
// The upload streams the file as the request body (text/csv); progress is read from
// GET /v1/jobs/{id}, polled with a growing interval.

const FINISHED = new Set(["succeeded", "failed", "cancelled", "aborted"]);
const $ = (id) => document.getElementById(id);

function say(text) {
  $("import-status").textContent = text;
}

function show(job) {
  const bar = $("import-progress");
  const progress = job.progress;
  bar.hidden = false;
  if (progress && progress.total) {
    bar.max = progress.total;
    bar.value = progress.done;
  } else if (job.status === "succeeded") {
    bar.max = 1;
    bar.value = 1;
  }
  say(`${job.status}${progress?.message ? ": " + progress.message : ""}`);
}

async function follow(jobId) {
  let delayMs = 300;
  for (;;) {
    const response = await fetch(`/v1/jobs/${jobId}`, { credentials: "same-origin" });
    if (!response.ok) {
      say(`Cannot read the import job (${response.status})`);
      return;
    }
    const job = await response.json();
    show(job);
    if (FINISHED.has(job.status)) return;
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    delayMs = Math.min(delayMs * 1.5, 3000);
  }
}

/** `csrfToken` returns the current session's CSRF token (set at sign-in). */
export function setupImports(csrfToken) {
  $("import-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = $("import-file").files[0];
    if (!file) return;
    $("import-progress").hidden = true;
    say("Uploading…");
    const response = await fetch("/v1/imports", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "text/csv", "X-CSRF-Token": csrfToken() ?? "" },
      body: file,
    });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      say(problem.detail ?? `Upload refused (${response.status})`);
      return;
    }
    const job = await response.json();
    $("import-job").textContent = String(job.id);
    await follow(job.id);
  });
}
