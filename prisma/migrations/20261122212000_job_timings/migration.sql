-- Where a job's time went (per phase of its latest run) and what ran it (training backend, the
-- engine of the frozen layers, the device): GET /v1/jobs/:id shows both.

-- AlterTable
ALTER TABLE "jobs" ADD COLUMN     "runtime" JSONB,
ADD COLUMN     "timings" JSONB;
