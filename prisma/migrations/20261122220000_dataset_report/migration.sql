-- Data checks found at upload (duplicates across classes, train/val leakage, imbalance, …):
-- GET /v1/datasets/:id/report. Null for datasets uploaded before the checks existed.

-- AlterTable
ALTER TABLE "datasets" ADD COLUMN     "report" JSONB;
