// The example's work: a synthetic source of EXAMPLE_RECORDS records per
// partition (r-0001 …), EXAMPLE_BATCH a batch, each batch taking about
// EXAMPLE_BATCH_MS (± half) — a stand-in for reading a page from an API or
// a table and writing it somewhere. Each batch is logged as a JSON line
// (the Lambda's log): which partition, which records, when it began.
const total = Number(process.env.EXAMPLE_RECORDS ?? 100);
const size = Number(process.env.EXAMPLE_BATCH ?? 10);
const cost = Number(process.env.EXAMPLE_BATCH_MS ?? 200);

const id = (n) => `r-${String(n).padStart(4, "0")}`;

/** The batch after bookmark `after`: {progress, done}. */
export async function readBatch(partition, after, budgetMs) {
  const from = after ? Number(after.slice(2)) : 0;
  const to = Math.min(from + size, total);
  console.log(JSON.stringify({ batch: partition, from, to, at: Date.now(), budget_ms: budgetMs }));
  await new Promise((resolve) => setTimeout(resolve, cost * (0.5 + Math.random())));
  return { progress: { last_processed_id: id(to), add_records: to - from, add_bytes: (to - from) * 100 }, done: to >= total };
}
