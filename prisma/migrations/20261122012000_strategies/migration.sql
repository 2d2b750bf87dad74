-- AlterTable
ALTER TABLE "epoch_metrics" ADD COLUMN     "stage" INTEGER;

-- AlterTable
ALTER TABLE "jobs" ADD COLUMN     "embeddingCacheHit" BOOLEAN,
ADD COLUMN     "stoppedEarly" BOOLEAN NOT NULL DEFAULT false;

-- AlterTable
ALTER TABLE "models" ADD COLUMN     "evaluation" JSONB,
ADD COLUMN     "scratchAccuracy" DOUBLE PRECISION,
ADD COLUMN     "strategy" TEXT NOT NULL DEFAULT 'feature_extraction',
ADD COLUMN     "transferGain" DOUBLE PRECISION;
