-- Hyperparameter sweeps: a search over a job spec's hyperparameters. Every trial is an ordinary
-- job (jobs."sweepId", "trialNumber"); the sweep row holds the search (spec, counts, ASHA's rung
-- records) and the lease of the worker whose controller acts on it.

-- CreateEnum
CREATE TYPE "SweepStatus" AS ENUM ('queued', 'running', 'succeeded', 'failed', 'canceled');

-- CreateTable
CREATE TABLE "sweeps" (
    "id" UUID NOT NULL,
    "tenantId" UUID NOT NULL,
    "datasetId" UUID,
    "spec" JSONB NOT NULL,
    "searcher" TEXT NOT NULL,
    "metric" TEXT NOT NULL,
    "maxTrials" INTEGER NOT NULL,
    "maxConcurrentTrials" INTEGER NOT NULL,
    "status" "SweepStatus" NOT NULL DEFAULT 'queued',
    "trialsCreated" INTEGER NOT NULL DEFAULT 0,
    "rungs" JSONB,
    "warnings" JSONB,
    "leaseToken" UUID,
    "leaseUntil" TIMESTAMP(3),
    "errorCode" TEXT,
    "errorMessage" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "startedAt" TIMESTAMP(3),
    "finishedAt" TIMESTAMP(3),

    CONSTRAINT "sweeps_pkey" PRIMARY KEY ("id")
);

-- AlterTable
ALTER TABLE "jobs" ADD COLUMN     "sweepId" UUID,
ADD COLUMN     "trialNumber" INTEGER,
ADD COLUMN     "ashaStopped" BOOLEAN NOT NULL DEFAULT false;

-- CreateIndex
CREATE INDEX "sweeps_tenantId_createdAt_id_idx" ON "sweeps"("tenantId", "createdAt", "id");

-- CreateIndex
CREATE INDEX "sweeps_status_idx" ON "sweeps"("status");

-- CreateIndex
CREATE UNIQUE INDEX "jobs_sweepId_trialNumber_key" ON "jobs"("sweepId", "trialNumber");

-- AddForeignKey
ALTER TABLE "sweeps" ADD CONSTRAINT "sweeps_tenantId_fkey" FOREIGN KEY ("tenantId") REFERENCES "tenants"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "sweeps" ADD CONSTRAINT "sweeps_datasetId_fkey" FOREIGN KEY ("datasetId") REFERENCES "datasets"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_sweepId_fkey" FOREIGN KEY ("sweepId") REFERENCES "sweeps"("id") ON DELETE SET NULL ON UPDATE CASCADE;
