# Templates get versions and locales: the content moves from Template to TemplateVersion (one
# published version per existing template, its content under the template's default locale), and
# notifications and deliveries record which locale and A/B variant they used.

from django.db import migrations, models
import django.db.models.deletion


def move_content_to_versions(apps, schema_editor):
    Template = apps.get_model("notify", "Template")
    TemplateVersion = apps.get_model("notify", "TemplateVersion")
    for template in Template.objects.all():
        TemplateVersion.objects.create(template=template, number=template.version or 1,
                                       content={template.default_locale: template.content},
                                       published_at=template.updated_at)
    Template.objects.filter(created_at__isnull=True).update(created_at=models.F("updated_at"))


def versions_back_to_content(apps, schema_editor):
    Template = apps.get_model("notify", "Template")
    for template in Template.objects.all():
        latest = template.versions.order_by("-number").first()
        if latest is not None:
            template.content = next(iter(latest.content.values()), {})
            template.version = latest.number
            template.save(update_fields=["content", "version"])


class Migration(migrations.Migration):

    dependencies = [
        ('notify', '0003_channel_registry'),
    ]

    operations = [
        migrations.CreateModel(
            name='TemplateVersion',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('number', models.PositiveIntegerField()),
                ('content', models.JSONField()),
                ('variants', models.JSONField(blank=True, default=list)),
                ('published_at', models.DateTimeField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('template', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='versions',
                                               to='notify.template')),
            ],
            options={'ordering': ['template', 'number']},
        ),
        migrations.AddConstraint(
            model_name='templateversion',
            constraint=models.UniqueConstraint(fields=('template', 'number'), name='template_version_unique'),
        ),
        migrations.AddField(model_name='template', name='default_locale',
                            field=models.CharField(default='en', max_length=35)),
        migrations.AddField(model_name='template', name='truncate_push', field=models.BooleanField(default=False)),
        migrations.AddField(model_name='template', name='archived_at',
                            field=models.DateTimeField(blank=True, null=True)),
        migrations.AddField(model_name='template', name='created_at',
                            field=models.DateTimeField(auto_now_add=True, null=True)),
        migrations.RunPython(move_content_to_versions, versions_back_to_content),
        migrations.RemoveConstraint(model_name='template', name='template_unique'),
        migrations.RemoveField(model_name='template', name='content'),
        migrations.RemoveField(model_name='template', name='version'),
        migrations.RemoveField(model_name='template', name='locale'),
        migrations.AlterField(model_name='template', name='created_at',
                              field=models.DateTimeField(auto_now_add=True)),
        migrations.AddConstraint(
            model_name='template',
            constraint=models.UniqueConstraint(fields=('app', 'name'), name='template_name_unique'),
        ),
        migrations.AddField(model_name='notification', name='locale',
                            field=models.CharField(blank=True, default='', max_length=35)),
        migrations.AddField(model_name='delivery', name='variant',
                            field=models.CharField(blank=True, default='', max_length=32)),
    ]
