-- Job lifecycle: retrying state, run leases and heartbeats, stop reasons, resumable checkpoints.

-- AlterEnum
ALTER TYPE "JobStatus" ADD VALUE 'retrying' AFTER 'running';

-- AlterTable
ALTER TABLE "jobs" ADD COLUMN     "heartbeatAt" TIMESTAMP(3),
ADD COLUMN     "leaseToken" UUID,
ADD COLUMN     "runs" INTEGER NOT NULL DEFAULT 0,
ADD COLUMN     "stopReason" TEXT,
ADD COLUMN     "updatedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP;

-- CreateIndex
CREATE INDEX "jobs_status_updatedAt_idx" ON "jobs"("status", "updatedAt");

-- Checkpoints written before this migration hold no resumable state; they are dropped (their
-- S3 objects stay reachable under jobs/<id>/checkpoints/ and go with their job).
DELETE FROM "checkpoints";

-- AlterTable
ALTER TABLE "checkpoints" DROP COLUMN "storageKey",
ADD COLUMN     "elapsedMs" INTEGER NOT NULL,
ADD COLUMN     "sizeBytes" BIGINT NOT NULL,
ADD COLUMN     "storagePrefix" TEXT NOT NULL,
ADD COLUMN     "trainAcc" DOUBLE PRECISION NOT NULL,
ADD COLUMN     "trainLoss" DOUBLE PRECISION NOT NULL,
ADD COLUMN     "valLoss" DOUBLE PRECISION;
