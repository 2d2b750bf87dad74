-- A job keeps the blocking data-check findings its dataset had when it was created.

-- AlterTable
ALTER TABLE "jobs" ADD COLUMN     "warnings" JSONB;
