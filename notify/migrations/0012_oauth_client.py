import django.contrib.postgres.fields
import django.db.models.deletion
import notify.scopes
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('notify', '0011_provider_credentials'),
        migrations.swappable_dependency(settings.OAUTH2_PROVIDER_APPLICATION_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='OAuthClient',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('scopes', django.contrib.postgres.fields.ArrayField(base_field=models.CharField(max_length=20), blank=True, default=notify.scopes.default, help_text="What the client's tokens may do; admin grants every scope.", size=None, validators=[notify.scopes.validate])),
                ('active', models.BooleanField(default=True, help_text='Off: its tokens are refused and it gets no new one.')),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('app', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='oauth_clients', to='notify.app')),
                ('application', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='notify_client', to=settings.OAUTH2_PROVIDER_APPLICATION_MODEL)),
            ],
            options={
                'verbose_name': 'OAuth client',
            },
        ),
    ]
